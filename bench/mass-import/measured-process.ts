// Runs a command as a child process and measures it: wall time from spawn to exit, and peak resident memory (the
// kernel's VmHWM high-water mark from /proc, sampled until the process ends, so the last sample is the peak).
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';

export interface MeasuredRun {
  code: number | null;
  /** When the process was spawned (epoch ms), to compare with times recorded elsewhere (the job's finished_at). */
  spawnedAt: number;
  wallMs: number;
  peakRssBytes: number | null;
  stdout: string;
  stderr: string;
}

async function highWaterMark(pid: number): Promise<number | null> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    const match = /^VmHWM:\s+(\d+) kB/m.exec(status);
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

export async function runMeasured(command: string, args: string[], env: NodeJS.ProcessEnv, cwd?: string): Promise<MeasuredRun> {
  const started = performance.now();
  const spawnedAt = Date.now();
  const child = spawn(command, args, { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let peak: number | null = null;
  let exited = false;
  const exit = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      exited = true;
      resolve(code);
    }),
  );
  const sampling = (async () => {
    while (!exited) {
      const sample = await highWaterMark(child.pid!);
      if (sample !== null) peak = Math.max(peak ?? 0, sample);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  const code = await exit;
  const wallMs = performance.now() - started;
  await sampling;
  return { code, spawnedAt, wallMs, peakRssBytes: peak, stdout, stderr };
}
