// Listings of runs, rendered once per version of each run. A page of 50 runs cost the API server about 0.45 ms of
// CPU, nearly all of it in reading the 50 rows off the wire and writing them as JSON again, while a listing that is
// polled (a dashboard, a backend following its tenant's runs) mostly shows runs that have not changed since it was
// last served. So the JSON of each run's summary is kept under its row version (see versionedJobsPageQuery), and each
// page asks the database to leave out the columns of the runs whose versions the last page of the same listing showed
// and this server still holds. The database still chooses the page (filters, tenant, order) on every request; only
// unchanged runs skip the wire and the rendering.
// A running run's summary is never kept: its rate and ETA depend on the time it is read. Renderings do not depend on
// who reads them (a summary shows the same to every key allowed to see the run), and a page only ever holds the runs
// the database returned for the caller's filters.
import type { Queryable } from '../db/pool.js';
import { listVersionedJobsPage, type JobPageFilter, type JobSummaryRow } from '../queue/operator.js';

export interface RenderedPage {
  /** The runs' JSON, in page order. */
  runs: string[];
  /** The id of the last run of the page, for the next cursor. */
  lastId: number | undefined;
  /** Runs rendered for this page and runs whose kept rendering was reused. */
  rendered: number;
  reused: number;
}

export interface SummaryRenderingsOptions {
  /** Renderings kept at most, least recently used dropped first. */
  maxRenderings?: number;
  /** Characters kept at most, all renderings together (a summary is about 500; its error and progress can be more). */
  maxCharacters?: number;
  /** Listings (filter sets) whose last page is remembered. */
  maxListings?: number;
}

/** A summary longer than this (a long error context, a handler's large progress object) is rendered every time. */
const MAX_KEPT_LENGTH = 4_096;

/** A listing's last page: each run's id and the version this server rendered for it. */
type PageVersions = ReadonlyArray<readonly [id: number, version: string]>;

/** What a listing seen once remembers: that it was seen. It kept nothing, so it has no versions to offer yet. */
const FIRST_SIGHTING: PageVersions = Object.freeze([]);

export class SummaryRenderings {
  /** `id@version` → the run's JSON, least recently used first (a Map iterates in insertion order). */
  private readonly renderings = new Map<string, string>();
  private characters = 0;
  /** Per listing (its filters), the versions of its last page, least recently asked for first. */
  private readonly lastPages = new Map<string, PageVersions>();
  private readonly maxRenderings: number;
  private readonly maxCharacters: number;
  private readonly maxListings: number;

  constructor(options: SummaryRenderingsOptions = {}) {
    this.maxRenderings = options.maxRenderings ?? 20_000;
    this.maxCharacters = options.maxCharacters ?? 16_000_000;
    this.maxListings = options.maxListings ?? 1_000;
  }

  /** Renderings kept, and their characters. */
  get size(): { renderings: number; characters: number } {
    return { renderings: this.renderings.size, characters: this.characters };
  }

  async page(db: Queryable, filter: JobPageFilter, render: (run: JobSummaryRow) => string): Promise<RenderedPage> {
    const listing = listingKey(filter);
    // Only a listing asked for again keeps its renderings: one asked for once (a page at a random cursor, a search)
    // would only push out the renderings of the polled ones, and every string kept outlives the young generation, so
    // keeping the runs of pages nobody asks for twice cost more garbage collection than their rendering.
    const previous = this.lastPages.get(listing);
    // The renderings this page may reuse are taken now: another request may drop them while this one waits.
    const held = new Map<number, string>();
    const known = new Map<number, string>();
    for (const [id, version] of previous ?? []) {
      const rendering = this.renderings.get(`${id}@${version}`);
      if (rendering === undefined) continue;
      held.set(id, rendering);
      known.set(id, version);
    }
    const page = await listVersionedJobsPage(db, filter, known);
    const runs: string[] = [];
    let rendered = 0;
    for (const run of page) {
      if (run.row === null) {
        // Left out: the database found the version this page holds.
        const kept = held.get(run.id);
        if (kept === undefined || known.get(run.id) !== run.version) throw new Error(`run ${run.id}: the database left out a version this page did not hold`);
        this.keep(`${run.id}@${run.version}`, kept);
        runs.push(kept);
        continue;
      }
      const rendering = render(run.row);
      rendered += 1;
      if (previous !== undefined && run.row.state !== 'running' && rendering.length <= MAX_KEPT_LENGTH) {
        this.keep(`${run.id}@${run.version}`, flat(rendering));
      }
      runs.push(rendering);
    }
    this.lastPages.delete(listing);
    // A first sighting kept nothing, so there are no versions worth remembering yet.
    this.lastPages.set(listing, previous === undefined ? FIRST_SIGHTING : page.map((run) => [run.id, run.version] as const));
    if (this.lastPages.size > this.maxListings) dropOldest(this.lastPages, () => this.lastPages.size > Math.ceil(this.maxListings * 0.9));
    return { runs, lastId: page[page.length - 1]?.id, rendered, reused: page.length - rendered };
  }

  /** Kept as the most recently used. */
  private keep(key: string, rendering: string): void {
    const before = this.renderings.get(key);
    if (before !== undefined) {
      this.renderings.delete(key);
      this.characters -= before.length;
    }
    this.renderings.set(key, rendering);
    this.characters += rendering.length;
    if (this.renderings.size > this.maxRenderings || this.characters > this.maxCharacters) {
      // Down to nine tenths of both bounds.
      const over = () => this.renderings.size > Math.ceil(this.maxRenderings * 0.9) || this.characters > this.maxCharacters * 0.9;
      dropOldest(this.renderings, over, (dropped) => (this.characters -= dropped.length));
    }
  }
}

/**
 * Drops the oldest entries while `over()`, in one pass. Dropping one per insert made each drop cost a walk over the
 * slots earlier drops had emptied at the front (V8 compacts a Map's table only when it grows): 8 µs a drop at 20,000
 * entries against 0.4 µs an insert this way (measured over 200,000 inserts), 0.4 ms more for each page kept.
 */
function dropOldest<V>(map: Map<string, V>, over: () => boolean, dropped?: (value: V) => void): void {
  for (const [key, value] of map) {
    if (!over()) break;
    map.delete(key);
    dropped?.(value);
  }
}

/**
 * The string as one flat sequence of characters. The serializer builds a summary by concatenation, which V8 keeps as a
 * tree of the parts: kept that way, a summary of 350 characters took 2.0 kB of heap, flattened 0.4 kB (measured over
 * 100,000). Slicing a string makes V8 flatten it first; the space in front makes sure there is something to slice.
 */
function flat(value: string): string {
  return ` ${value}`.slice(1);
}

function listingKey(filter: JobPageFilter): string {
  return JSON.stringify([filter.states ?? null, filter.kinds ?? null, filter.tenantId ?? null, filter.since?.getTime() ?? null, filter.until?.getTime() ?? null, filter.beforeId ?? null, filter.limit]);
}
