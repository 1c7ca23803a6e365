-- Up Migration

-- Postgres evaluates every CHECK constraint of a row on every UPDATE, whichever columns change: each claim,
-- heartbeat, progress write and completion ran the kind's regular expression again (5.7 % of the database's CPU in a
-- claim-and-complete profile, the regex engine's DFA set up afresh for each row). The same rule without a regex:
-- 1 to 64 characters from [a-z0-9-], the first not a hyphen (ltrim with a character set leaves '' only when every
-- character is in the set). JOB_KIND_PATTERN (worker/queue/types.ts) is the rule in the code.
--
-- NOT VALID then VALIDATE: the new constraint is checked against existing runs under a lock that lets claims and
-- completions go on (SHARE UPDATE EXCLUSIVE), not the ACCESS EXCLUSIVE an ADD CONSTRAINT would hold while it scans.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
  CHECK (octet_length(kind) BETWEEN 1 AND 64 AND left(kind, 1) <> '-' AND ltrim(kind, 'abcdefghijklmnopqrstuvwxyz0123456789-') = '')
  NOT VALID;
ALTER TABLE jobs VALIDATE CONSTRAINT jobs_kind_check;

-- Down Migration

ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check CHECK (kind ~ '^[a-z0-9][a-z0-9-]{0,63}$');
