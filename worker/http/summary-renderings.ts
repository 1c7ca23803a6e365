// Listings of runs, rendered once per version of each run. A page of 50 runs cost the API server about 0.45 ms of
// CPU, nearly all of it in reading the 50 rows off the wire and writing them as JSON again, while a listing that is
// polled (a dashboard, a backend following its tenant's runs) mostly shows runs that have not changed since it was
// last served. So the JSON of each run's summary is kept under its row version (see versionedJobsPageQuery), and each
// page asks the database to leave out the columns of the runs whose versions the last page of the same listing showed
// and this server still holds. The database still chooses the page (filters, tenant, order) on every request; only
// unchanged runs skip the wire and the rendering.
// And when the database returns the very runs and versions of the listing's last page, the answer sent for that page
// is sent again as it was (kept as bytes, outside V8's heap), not joined from 50 summaries and encoded to 26 kB again.
// And before reading such a page, the server asks for its signature (the runs' ids and versions as one string): when
// it matches, the rows are not read at all. On 200,000 runs at 32 connections a polled listing's server CPU went from
// 0.30–0.44 ms to 0.22–0.34 with the kept answer, then to 0.16–0.18 with the signature (Postgres 0.15–0.19 → 0.12).
// A running run's summary is never kept: its rate and ETA depend on the time it is read. A rendering depends on who
// reads it only through the audience (an operator's shows more than a tenant's: views.ts), so the API keeps one set
// per audience; and a page only ever holds the runs the database returned for the caller's filters.
import type { Queryable } from '../db/pool.js';
import { KnownVersions, listVersionedJobsPage, pageSignature, readJobsPageSignature, type JobPageFilter, type JobSummaryRow } from '../queue/operator.js';

export interface RenderedPage {
  /** The runs' JSON, in page order. */
  runs: string[];
  /** The id of the last run of the page, for the next cursor. */
  lastId: number | undefined;
  /** The answer: compose's string, or the bytes of an identical page answered before. */
  body: string | Buffer;
  /** Runs rendered for this page and runs whose kept rendering was reused. */
  rendered: number;
  reused: number;
  /** True when the page's signature showed it unchanged, and its rows were not read. */
  signed: boolean;
}

export interface SummaryRenderingsOptions {
  /** Renderings kept at most, least recently used dropped first. */
  maxRenderings?: number;
  /** Characters kept at most, all renderings together (a summary is about 500; its error and progress can be more). */
  maxCharacters?: number;
  /** Listings (filter sets) whose last page is remembered. */
  maxListings?: number;
  /**
   * Bytes kept for listings at most, all together: their whole answers (a page of 50 runs is about 26 kB) and their
   * pages' versions (held three times over: as the statement's JSON, the signature, the ids and versions).
   */
  maxListingBytes?: number;
}

/** A summary longer than this (a long error context, a handler's large progress object) is rendered every time. */
const MAX_KEPT_LENGTH = 4_096;

/** A rendering kept: the run's JSON at one version of its row. */
interface Kept {
  version: string;
  json: string;
}

/** What a listing remembers of its last page. */
interface LastPage {
  /** Each run's id and the version this server rendered for it, in page order. */
  ids: readonly number[];
  versions: readonly string[];
  /** Run id → its place on the page. */
  places: ReadonlyMap<number, number>;
  /** The same versions as the statement takes them, built once per page rather than per request. */
  known: KnownVersions;
  /** The whole answer, when every run of the page was kept: sent again while the database returns the same page. */
  answer: Buffer | undefined;
  /** The page's signature (pageSignature), when it has an answer. */
  signature: string | undefined;
  /**
   * Whether the next request asks for the page's signature first: while the page was last seen unchanged. A listing
   * that changed is read in full next time, so one that changes on every request (progress moving) does not pay for
   * a signature it never matches.
   */
  probe: boolean;
}

/** What a listing seen once remembers: that it was seen. It kept nothing, so it has no versions to offer yet. */
const FIRST_SIGHTING: LastPage = Object.freeze({ ids: [], versions: [], places: new Map(), known: KnownVersions.NONE, answer: undefined, signature: undefined, probe: false });

export class SummaryRenderings {
  /** Run id → its JSON at the version last rendered, least recently used first (a Map iterates in insertion order). */
  private readonly renderings = new Map<number, Kept>();
  private characters = 0;
  /** Per listing (its filters), its last page, least recently asked for first. */
  private readonly lastPages = new Map<string, LastPage>();
  private listingBytes = 0;
  private readonly maxRenderings: number;
  private readonly maxCharacters: number;
  private readonly maxListings: number;
  private readonly maxListingBytes: number;

  constructor(options: SummaryRenderingsOptions = {}) {
    this.maxRenderings = options.maxRenderings ?? 20_000;
    this.maxCharacters = options.maxCharacters ?? 16_000_000;
    this.maxListings = options.maxListings ?? 1_000;
    this.maxListingBytes = options.maxListingBytes ?? 16_000_000;
  }

  /** Renderings kept and their characters; whole answers kept and their bytes. */
  get size(): { renderings: number; characters: number; answers: number; answerBytes: number; listingBytes: number; listingBytesCounted: number } {
    let answers = 0;
    let answerBytes = 0;
    let listingBytes = 0;
    for (const last of this.lastPages.values()) {
      if (last.answer !== undefined) answers += 1;
      answerBytes += last.answer?.length ?? 0;
      listingBytes += weight(last);
    }
    // listingBytesCounted is the running count the bound is checked against; it must equal the sum.
    return { renderings: this.renderings.size, characters: this.characters, answers, answerBytes, listingBytes, listingBytesCounted: this.listingBytes };
  }

  /**
   * A page of the listing `filter` describes, its runs rendered with `render` (or reused), its answer made by
   * `compose` from the runs' JSON and the last run's id. The answer must depend on nothing else: it is sent again as
   * it was while the database returns the same runs at the same versions.
   */
  async page(
    db: Queryable,
    filter: JobPageFilter,
    render: (run: JobSummaryRow) => string,
    compose: (runs: readonly string[], lastId: number | undefined) => string,
  ): Promise<RenderedPage> {
    const listing = listingKey(filter);
    // Only a listing asked for again keeps its renderings: one asked for once (a page at a random cursor, a search)
    // would only push out the renderings of the polled ones, and every string kept outlives the young generation, so
    // keeping the runs of pages nobody asks for twice cost more garbage collection than their rendering.
    const previous = this.lastPages.get(listing);
    // The renderings this page may reuse are taken now: another request may drop them while this one waits. (Loops
    // by index over arrays: this runs for every run of every polled page, and allocates nothing but `held`.)
    const count = previous?.ids.length ?? 0;
    const held = new Array<Kept | undefined>(count);
    let heldCount = 0;
    for (let place = 0; place < count; place += 1) {
      const kept = this.renderings.get(previous!.ids[place]!);
      if (kept === undefined || kept.version !== previous!.versions[place]) continue;
      held[place] = kept;
      heldCount += 1;
    }
    const allHeld = previous !== undefined && heldCount === count;
    if (allHeld && previous.answer !== undefined && previous.probe) {
      // The same runs at the same versions: the same answer, and the page's rows need not cross the wire at all.
      if ((await readJobsPageSignature(db, filter)) === previous.signature) {
        for (let place = 0; place < count; place += 1) this.touch(previous.ids[place]!, held[place]!);
        this.remember(listing, previous, previous);
        return { runs: held.map((kept) => kept!.json), lastId: previous.ids[count - 1], body: previous.answer, rendered: 0, reused: count, signed: true };
      }
    }
    const known = allHeld ? previous.known : new KnownVersions(heldVersions(previous, held));
    const page = await listVersionedJobsPage(db, filter, known);
    const runs: string[] = [];
    let rendered = 0;
    let keptAll = previous !== undefined;
    for (const run of page) {
      if (run.row === null) {
        // Left out: the database found the version this page holds.
        const place = previous?.places.get(run.id);
        const kept = place === undefined ? undefined : held[place];
        if (kept === undefined || kept.version !== run.version) throw new Error(`run ${run.id}: the database left out a version this page did not hold`);
        this.touch(run.id, kept);
        runs.push(kept.json);
        continue;
      }
      const rendering = render(run.row);
      rendered += 1;
      if (previous !== undefined && run.row.state !== 'running' && rendering.length <= MAX_KEPT_LENGTH) {
        this.keep(run.id, { version: run.version, json: flat(rendering) });
      } else {
        keptAll = false;
      }
      runs.push(rendering);
    }
    const lastId = page[page.length - 1]?.id;
    // The same runs at the same versions as the answer kept (every run left out, as many as then): the same answer.
    const same = rendered === 0 && allHeld && page.length === count && previous.answer !== undefined;
    const body = same ? previous.answer! : compose(runs, lastId);
    this.remember(listing, previous, same ? previous : this.lastPage(previous, page, keptAll ? body : undefined));
    return { runs, lastId, body, rendered, reused: page.length - rendered, signed: false };
  }

  /** What the listing remembers of a page just read. */
  private lastPage(previous: LastPage | undefined, page: ReadonlyArray<{ id: number; version: string }>, body: string | Buffer | undefined): LastPage {
    // A first sighting kept nothing, so there are no versions worth remembering yet.
    if (previous === undefined) return FIRST_SIGHTING;
    const ids = page.map((run) => run.id);
    const versions = page.map((run) => run.version);
    const answer = body === undefined ? undefined : typeof body === 'string' ? ownBytes(body) : body;
    return {
      ids,
      versions,
      places: new Map(ids.map((id, place) => [id, place])),
      known: new KnownVersions(page.map((run) => [run.id, run.version] as const)),
      answer,
      signature: answer === undefined ? undefined : pageSignature(ids, versions),
      // A page that changed since the answer kept for it is read in full next time; a first answer is tried.
      probe: previous.answer === undefined,
    };
  }

  /**
   * The listing's last page, now the most recently asked for. `previous`, remembered again, was found unchanged.
   * The answers' bytes count what the listing held when this request ended: another request may have replaced it.
   */
  private remember(listing: string, previous: LastPage | undefined, last: LastPage): void {
    if (last === previous && last !== FIRST_SIGHTING) last.probe = true;
    const replaced = this.lastPages.get(listing);
    this.lastPages.delete(listing);
    if (replaced !== last) this.listingBytes += weight(last) - (replaced === undefined ? 0 : weight(replaced));
    this.lastPages.set(listing, last);
    if (this.lastPages.size > this.maxListings || this.listingBytes > this.maxListingBytes) {
      const over = () => this.lastPages.size > Math.ceil(this.maxListings * 0.9) || this.listingBytes > this.maxListingBytes * 0.9;
      dropOldest(this.lastPages, over, (dropped) => (this.listingBytes -= weight(dropped)));
    }
  }

  /** A rendering used again, now the most recently used, unless a request kept another version of the run meanwhile. */
  private touch(id: number, kept: Kept): void {
    const current = this.renderings.get(id);
    if (current === undefined || current === kept) this.keep(id, kept);
  }

  /** Kept as the most recently used. */
  private keep(id: number, kept: Kept): void {
    const before = this.renderings.get(id);
    if (before !== undefined) {
      this.renderings.delete(id);
      this.characters -= before.json.length;
    }
    this.renderings.set(id, kept);
    this.characters += kept.json.length;
    if (this.renderings.size > this.maxRenderings || this.characters > this.maxCharacters) {
      // Down to nine tenths of both bounds.
      const over = () => this.renderings.size > Math.ceil(this.maxRenderings * 0.9) || this.characters > this.maxCharacters * 0.9;
      dropOldest(this.renderings, over, (dropped) => (this.characters -= dropped.json.length));
    }
  }
}

/** What a listing's last page holds, in bytes (see SummaryRenderingsOptions.maxListingBytes). */
function weight(last: LastPage): number {
  return (last.answer?.length ?? 0) + 3 * last.known.json.length;
}

/**
 * The string's bytes in a buffer of their own. Buffer.from takes a small string's bytes from a shared 8 kB slab,
 * which a kept answer would then hold whole.
 */
function ownBytes(text: string): Buffer {
  const bytes = Buffer.allocUnsafeSlow(Buffer.byteLength(text));
  bytes.write(text);
  return bytes;
}

/** The versions of a page's runs whose renderings are held. */
function* heldVersions(previous: LastPage | undefined, held: ReadonlyArray<Kept | undefined>): Generator<readonly [number, string]> {
  for (let place = 0; place < held.length; place += 1) {
    if (held[place] !== undefined) yield [previous!.ids[place]!, held[place]!.version];
  }
}

/**
 * Drops the oldest entries while `over()`, in one pass. Dropping one per insert made each drop cost a walk over the
 * slots earlier drops had emptied at the front (V8 compacts a Map's table only when it grows): 8 µs a drop at 20,000
 * entries against 0.4 µs an insert this way (measured over 200,000 inserts), 0.4 ms more for each page kept.
 */
function dropOldest<K, V>(map: Map<K, V>, over: () => boolean, dropped?: (value: V) => void): void {
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
