// The products file of the CSV benchmarks: 10 columns, ~110 bytes a row, quoted fields, empty optional values, 50
// categories, 200 suppliers, 20 locations.

export const PRODUCTS_CSV_HEADER = 'sku,name,description,price,quantity,barcode,status,category,supplier,location\n';

const STATUSES = ['active', 'inactive', 'discontinued'];

/** Row i (1-based) of the file, with its line end. */
export function productsCsvLine(i: number): string {
  const description = i % 7 === 0 ? `"Sturdy, ""classic"" item ${i}"` : `Item number ${i}`;
  const barcode = i % 11 === 0 ? '' : String(4_000_000_000_000 + i);
  const location = i % 5 === 0 ? '' : `Location ${i % 20}`;
  return (
    `SKU-${String(i).padStart(8, '0')},Product ${i},${description},${Math.floor(i / 3) % 1000}.${String(i % 100).padStart(2, '0')},` +
    `${i % 500},${barcode},${STATUSES[i % 3]},Category ${i % 50},Supplier ${i % 200},${location}\n`
  );
}
