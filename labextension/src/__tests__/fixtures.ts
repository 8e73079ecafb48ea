/** ProcessInfo objects as a SPEC 11 server lists them, for the DOM-free modules' tests. */
import { IOrigin, IProcessInfo } from '../protocol';

export const T0 = 1_780_000_000_000;

export function info(processId: string, patch: Partial<IProcessInfo> = {}): IProcessInfo {
  return {
    processId,
    argv: ['/bin/sh', '-c', `run ${processId}`],
    cwd: '/home/user',
    tty: false,
    pid: 4242,
    label: null,
    lifetime: 'detached',
    state: 'running',
    startedAt: T0,
    exitedAt: null,
    exitCode: null,
    signal: null,
    nextSeq: 1,
    firstSeq: 1,
    outputBytes: 0,
    ports: [],
    usage: { cpuPercent: 0, cpuSeconds: 0, rssBytes: 0, peakRssBytes: 0, processes: 1 },
    origin: null,
    ...patch
  };
}

export const NOTEBOOK: IOrigin = { kind: 'notebook', name: 'analysis.ipynb' };
export const AGENT: IOrigin = { kind: 'agent', name: 'codex' };
export const CLI: IOrigin = { kind: 'cli', name: 'jupyter exec' };

/**
 * 200 processes from three origins, as the browser test starts them: every
 * tenth runs, every seventh finished one failed. Origins rotate notebook,
 * agent, cli; the newest has the highest number.
 */
export function twoHundred(): IProcessInfo[] {
  const origins = [NOTEBOOK, AGENT, CLI];
  return Array.from({ length: 200 }, (_, i) => {
    const running = i % 10 === 0;
    const failed = !running && i % 7 === 0;
    return info(`p${i}`, {
      label: `job-${i}`,
      origin: origins[i % 3],
      startedAt: T0 + i * 1000,
      state: running ? 'running' : 'closed',
      exitedAt: running ? null : T0 + i * 1000 + 500,
      exitCode: running ? null : failed ? 1 : 0
    });
  });
}
