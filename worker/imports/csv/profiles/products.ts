// The `products` profile: a product catalogue keyed by SKU, with its category, supplier and location created on first
// use. Target: the products table (migrations/20261128000300_products_and_csv_staging.sql).
import { defineProfile } from '../profile.js';

export const PRODUCT_STATUSES = ['active', 'inactive', 'discontinued'] as const;

export const productsProfile = defineProfile({
  name: 'products',
  description: 'product catalogue: sku (natural key), name, price, quantity, status, category/supplier/location',
  target: {
    table: 'products',
    naturalKey: ['sku'],
    tenantColumn: 'tenant_id',
    updatedAtColumn: 'updated_at',
    jobColumn: 'last_import_job_id',
  },
  columns: [
    {
      name: 'sku',
      type: 'text',
      required: true,
      maxLength: 64,
      pattern: /^[A-Za-z0-9][A-Za-z0-9._/-]*$/,
      patternHint: 'letters, digits, ".", "_", "/" or "-", starting with a letter or digit',
    },
    { name: 'name', type: 'text', required: true, maxLength: 200 },
    { name: 'description', type: 'text', maxLength: 2000 },
    { name: 'price', type: 'decimal', required: true, min: 0, max: 9_999_999_999.99, scale: 2 },
    { name: 'quantity', type: 'integer', required: true, min: 0, max: 2_147_483_647 },
    {
      name: 'barcode',
      type: 'text',
      pattern: /^(?:\d{8}|\d{12,14})$/,
      patternHint: 'an EAN-8, UPC-A, EAN-13 or GTIN-14: 8, 12, 13 or 14 digits',
    },
    { name: 'status', type: 'enum', required: true, values: PRODUCT_STATUSES },
    { name: 'category', type: 'text', maxLength: 100, reference: { table: 'categories' }, target: 'category_id' },
    { name: 'supplier', type: 'text', maxLength: 100, reference: { table: 'suppliers' }, target: 'supplier_id' },
    { name: 'location', type: 'text', maxLength: 100, reference: { table: 'locations' }, target: 'location_id' },
  ],
});
