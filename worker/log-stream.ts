// pino's destination (sonic-boom, in its default utf8 mode) keeps the lines not yet written in chunks of at most
// `maxWrite` bytes (16 kB) and, to know whether the next line still fits, measures the UTF-8 length of the last
// chunk again on every line. Each line then costs a pass over (and, the chunk being a concatenated string, a flattened
// copy of) up to 16 kB: in a busy worker 3–5 µs and kilobytes of garbage per line, more than building the line.
// countChunkBytes gives such a stream a `write` that keeps the last chunk's length as lines are added instead; what
// it writes, in what order and in what chunks, is the same (test/log-stream.test.ts checks it against sonic-boom's own).

/** The parts of a sonic-boom stream (sonic-boom 4, utf8 mode) its `write` uses. */
interface Utf8SonicBoom {
  _bufs: string[];
  _len: number;
  _writing: boolean;
  _writingBuf: unknown;
  _hwm: number;
  _actualWrite(): void;
  destroyed: boolean;
  maxWrite: number;
  maxLength: number;
  minLength: number;
  emit(event: 'drop', data: string): boolean;
  write(data: string): boolean;
}

const counting = new WeakSet<object>();

function isUtf8SonicBoom(stream: unknown): stream is Utf8SonicBoom {
  const candidate = stream as Partial<Utf8SonicBoom> | null;
  return (
    typeof candidate === 'object' && candidate !== null && Array.isArray(candidate._bufs) && typeof candidate._writingBuf === 'string' &&
    typeof candidate._actualWrite === 'function' && typeof candidate._len === 'number' && typeof candidate.maxWrite === 'number'
  );
}

/**
 * Makes a sonic-boom stream count its last chunk's bytes as lines come in. Other streams (pino-pretty, a test's
 * stream) are left as they are. Returns whether the stream now counts.
 */
export function countChunkBytes(stream: unknown): boolean {
  if (!isUtf8SonicBoom(stream)) return false;
  if (counting.has(stream)) return true;
  // The last chunk as this write left it and its bytes. sonic-boom also adds chunks of its own (flush() pushes an
  // empty one, flushSync() puts back the one it was writing): a last chunk that is not the one kept here is measured
  // once, as sonic-boom would.
  let lastChunk: string | undefined;
  let lastBytes = 0;
  stream.write = function write(this: Utf8SonicBoom, input: string): boolean {
    if (stream.destroyed) throw new Error('SonicBoom destroyed');
    const data = '' + input;
    const dataBytes = Buffer.byteLength(data);
    const pendingBytes = stream._len + dataBytes;
    const chunks = stream._bufs;
    if (stream.maxLength && pendingBytes > stream.maxLength) {
      stream.emit('drop', data);
      return stream._len < stream._hwm;
    }
    const end = chunks.length - 1;
    if (end >= 0 && chunks[end] !== lastChunk) lastBytes = Buffer.byteLength(chunks[end]!);
    if (end < 0 || lastBytes + dataBytes > stream.maxWrite) {
      chunks.push(data);
      lastBytes = dataBytes;
    } else {
      chunks[end] += data;
      lastBytes += dataBytes;
    }
    lastChunk = chunks[chunks.length - 1];
    stream._len = pendingBytes;
    if (!stream._writing && stream._len >= stream.minLength) stream._actualWrite();
    return stream._len < stream._hwm;
  };
  counting.add(stream);
  return true;
}
