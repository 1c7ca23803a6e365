// Node's flags for the admin API's process, apart from the stack's modules so that bench:api can start its server the
// same way without loading the CDK. (The worker's are in its default command, DEFAULTS.workerCommand.)

/**
 * `serve` (the admin API's command; bench:api starts its server with them too). --max-semi-space-size=16 pins the
 * young generation at 16 MiB semi-spaces, the size measured; V8 otherwise sizes it from the memory it sees: 64 MiB on
 * the 24 GB development machine (not measured in a 512 MiB task). There, at one connection, each scavenge during a
 * run of listings promoted 4.9 MB and paused 4–6 ms (a listing's p99 7.3 ms); with 16 MiB each promoted under 1 kB
 * and paused 0.6 ms (p99 4.5 ms). At 32 connections the listing's p90 was lower in 6 of 6 paired runs, its p99 in 4
 * of 6, its throughput the same. 8 MiB was no better.
 */
export const ADMIN_API_NODE_FLAGS = ['--max-semi-space-size=16'];
