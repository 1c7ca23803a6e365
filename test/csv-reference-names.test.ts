import { describe, expect, it } from 'vitest';
import { readHeader } from '../worker/imports/csv/header.js';
import { productsProfile } from '../worker/imports/csv/profiles/products.js';
import { ReferenceNames } from '../worker/imports/csv/reference-names.js';

const layout = readHeader(
  productsProfile,
  { line: 1, fields: ['sku', 'name', 'price', 'quantity', 'status', 'category', 'supplier'] },
  { bucket: 'b', key: 'k', encoding: 'utf-8' },
);
const row = (category: string | null, supplier: string | null) => ['S-1', 'n', '1.00', '1', 'active', category, supplier];

describe('ReferenceNames', () => {
  it('lists each reference column’s distinct names by staged position, skipping empty values', () => {
    const names = new ReferenceNames(layout);
    names.add(row('Tools', 'Acme'));
    names.add(row('Tools', null));
    names.add(row('Garden', 'Acme'));
    expect(names.lists(true)).toEqual({ '6': ['Tools', 'Garden'], '7': ['Acme'] });
  });

  it('gives up a column’s list past its cap, and every list when rows were removed after staging', () => {
    const names = new ReferenceNames(layout, 2);
    for (const category of ['a', 'b', 'c']) names.add(row(category, 'Acme'));
    expect(names.lists(true)).toEqual({ '6': null, '7': ['Acme'] });
    expect(names.lists(false)).toEqual({ '6': null, '7': null });
  });
});
