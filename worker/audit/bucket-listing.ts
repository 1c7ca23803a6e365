// Lists a bucket (or a prefix of it) page by page, so an audit of millions of objects never holds them all. With a
// signal, an abort (cancel, shutdown) ends the request in flight and no further page is asked for.
import { ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';

export interface ListedObject {
  key: string;
  sizeBytes: number;
  lastModified: Date | null;
}

export async function* listObjectPages(
  s3: S3Client,
  bucket: string,
  prefix: string,
  pageSize = 1000,
  signal?: AbortSignal,
): AsyncGenerator<ListedObject[]> {
  let continuationToken: string | undefined;
  do {
    signal?.throwIfAborted();
    const page = await s3.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix || undefined, ContinuationToken: continuationToken, MaxKeys: pageSize }),
      { abortSignal: signal },
    );
    const objects = (page.Contents ?? [])
      .filter((object) => object.Key !== undefined)
      .map((object) => ({ key: object.Key!, sizeBytes: object.Size ?? 0, lastModified: object.LastModified ?? null }));
    if (objects.length > 0) yield objects;
    continuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
  } while (continuationToken);
}
