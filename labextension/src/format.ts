/**
 * How the panel's rows, the output view and the notifications put a process
 * into words: durations, exit badges, byte sizes, usage, ports, origins,
 * sandboxes, restarts, queues and dependencies.
 *
 * Pure functions of `IProcessInfo` (no DOM, no JupyterLab), so the list and
 * the view cannot drift apart and jest checks every wording in node.
 */
import { IOrigin, IPort, IProcessInfo, IQueueInfo, IUsage } from './protocol';

/** `m:ss`, or `h:mm:ss` past an hour. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number) => String(n).padStart(2, '0');
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** "exited 0", "exited 2", "killed by SIGTERM (143)". */
export function describeExit(exitCode: number | null, signal: string | null): string {
  if (signal) {
    return `killed by ${signal}${exitCode !== null ? ` (${exitCode})` : ''}`;
  }
  return exitCode === null ? 'exited' : `exited ${exitCode}`;
}

/** The colour class of a badge (CSS `data-state`). */
export type BadgeState = 'running' | 'queued' | 'ok' | 'failed' | 'signal';

/** What a badge needs to know: the state, the exit, and why it never ran. */
export type BadgeInfo = Pick<IProcessInfo, 'state' | 'exitCode' | 'signal'> & Partial<Pick<IProcessInfo, 'failure'>>;

/** What a badge says and how it is coloured. */
export function exitBadge(info: BadgeInfo): {
  text: string;
  state: BadgeState;
} {
  switch (info.state) {
    case 'running':
      return { text: 'running', state: 'running' };
    case 'restarting':
      return { text: 'restarting', state: 'running' };
    case 'queued':
      return { text: 'queued', state: 'queued' };
    case 'lost':
      return { text: 'lost', state: 'failed' };
    default:
      if (info.exitCode === null && !info.signal && info.failure) {
        // A dependency failed, or it was terminated while queued (SPEC 11).
        return { text: 'not started', state: 'failed' };
      }
      return {
        text: describeExit(info.exitCode, info.signal),
        state: info.exitCode === 0 ? 'ok' : info.signal ? 'signal' : 'failed'
      };
  }
}

/** What the output view knows of a process's exit, from its own stream. */
export interface IStreamExit {
  exited: boolean;
  exitCode: number | null;
  signal: string | null;
}

/**
 * The state an output view shows: the list's, unless the view's own stream
 * already saw the exit (it often does first); 'running' while neither knows.
 */
export function shownState(info: BadgeInfo | undefined, stream: IStreamExit | null): BadgeInfo {
  if (stream?.exited) {
    return { state: 'exited', exitCode: stream.exitCode, signal: stream.signal, failure: info?.failure };
  }
  return info ?? { state: 'running', exitCode: null, signal: null };
}

/** True while the process may still run (nothing to clear, nothing to announce yet). */
export function isActive(info: Pick<IProcessInfo, 'state'>): boolean {
  return info.state === 'running' || info.state === 'queued' || info.state === 'restarting';
}

/** "2 running, 3 queued" ("restarting" counts as running: it is between two runs). */
export function activitySummary(processes: Pick<IProcessInfo, 'state'>[]): string {
  const queued = processes.filter(p => p.state === 'queued').length;
  const running = processes.filter(isActive).length - queued;
  return queued ? `${running} running, ${queued} queued` : `${running} running`;
}

/** True for a finished process that did not exit 0 (a signal, a failure, a never-started one). */
export function isFailure(info: Pick<IProcessInfo, 'state' | 'exitCode'>): boolean {
  return !isActive(info) && info.exitCode !== 0;
}

const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];

/** Decimal units as `ps`, pm2 and the OS monitors show them: "512 B", "1.5 MB", "14 GB". */
export function formatBytes(bytes: number): string {
  let value = Math.max(0, bytes);
  let unit = 0;
  while (value >= 999.5 && unit < UNITS.length - 1) {
    value /= 1000;
    unit++;
  }
  const digits = unit === 0 || value >= 9.95 ? 0 : 1;
  return `${value.toFixed(digits)} ${UNITS[unit]}`;
}

/** "0 %", "7.5 %", "230 %" (a tree can use more than one core). */
export function formatPercent(percent: number): string {
  const value = Math.max(0, percent);
  return `${value < 9.95 ? value.toFixed(1) : value.toFixed(0)} %`;
}

/** CPU time: "0.4 s", "12 s", "3:25" past a minute. */
export function formatCpuSeconds(seconds: number): string {
  const value = Math.max(0, seconds);
  if (value >= 60) {
    return formatDuration(value * 1000);
  }
  return `${value < 9.95 ? value.toFixed(1) : value.toFixed(0)} s`;
}

/**
 * The row's short usage: live "12 % · 340 MB · 3 procs" while it runs, the
 * final "4.2 s CPU · peak 400 MB" after it ended; '' when not measured.
 */
export function usageSummary(info: Pick<IProcessInfo, 'state' | 'usage'>): string {
  const usage = info.usage;
  if (!usage) {
    return '';
  }
  if (isActive(info)) {
    if (info.state !== 'running') {
      return ''; // queued, or between two runs: nothing runs to measure
    }
    const procs = usage.processes === 1 ? '' : ` · ${usage.processes} procs`;
    return `${formatPercent(usage.cpuPercent)} · ${formatBytes(usage.rssBytes)}${procs}`;
  }
  // A process too short for one sample has no peak: no "peak 0 B".
  const peak = usage.peakRssBytes > 0 ? ` · peak ${formatBytes(usage.peakRssBytes)}` : '';
  return `${formatCpuSeconds(usage.cpuSeconds)} CPU${peak}`;
}

/** The view's longer usage line, every figure with its name. */
export function usageDetails(info: Pick<IProcessInfo, 'state' | 'usage'>): string {
  const usage: IUsage | null | undefined = info.usage;
  if (!usage) {
    return '';
  }
  const peak = `peak RSS ${formatBytes(usage.peakRssBytes)}`;
  const cpuTime = `CPU time ${formatCpuSeconds(usage.cpuSeconds)}`;
  if (!isActive(info)) {
    return usage.peakRssBytes > 0 ? `${cpuTime} · ${peak}` : cpuTime;
  }
  const procs = `${usage.processes} process${usage.processes === 1 ? '' : 'es'}`;
  return `CPU ${formatPercent(usage.cpuPercent)} · ${cpuTime} · RSS ${formatBytes(usage.rssBytes)} (${peak}) · ${procs}`;
}

/** One link per listened port, lowest first, each port once (IPv4 and IPv6 sockets alike). */
export function portLinks(info: Pick<IProcessInfo, 'ports'>): { port: number; url: string | null; title: string }[] {
  const byPort = new Map<number, IPort[]>();
  for (const p of info.ports ?? []) {
    byPort.set(p.port, [...(byPort.get(p.port) ?? []), p]);
  }
  return [...byPort.keys()]
    .sort((a, b) => a - b)
    .map(port => {
      const entries = byPort.get(port)!;
      const url = entries.find(e => e.url)?.url ?? null;
      const where = entries.map(e => `${e.address}:${e.port} (pid ${e.pid})`).join(', ');
      return { port, url, title: url ? `Open port ${port} through Jupyter: ${where}` : `Listening: ${where}` };
    });
}

/** True when the server dropped the start of the output (a log budget, SPEC 4 `firstSeq`). */
export function logCut(info: Pick<IProcessInfo, 'firstSeq'>): boolean {
  return info.firstSeq > 1;
}

/** Origins are grouped in this order; unknown kinds last. */
const ORIGIN_ORDER = ['notebook', 'console', 'agent', 'cli', 'panel', 'client'];

const ORIGIN_NAMES: Record<string, string> = {
  notebook: 'Notebook',
  console: 'Console',
  agent: 'Agent',
  cli: 'Command line',
  panel: 'Panel',
  client: 'Client'
};

/** A stable key of an origin, for grouping ("other" when the server sent none). */
export function originKey(origin: IOrigin | null | undefined): string {
  return origin ? `${origin.kind}\u0000${origin.name}` : 'other';
}

/** "Notebook · analysis.ipynb", "Agent · codex", "Command line", "Other". */
export function originLabel(origin: IOrigin | null | undefined): string {
  if (!origin) {
    return 'Other';
  }
  const kind = ORIGIN_NAMES[origin.kind] ?? origin.kind;
  return origin.name && origin.kind !== 'cli' ? `${kind} · ${origin.name}` : kind;
}

/** Compare two origins: by kind (notebooks first), then by name. */
export function compareOrigins(a: IOrigin | null | undefined, b: IOrigin | null | undefined): number {
  const rank = (o: IOrigin | null | undefined) => {
    const i = o ? ORIGIN_ORDER.indexOf(o.kind) : -1;
    return i < 0 ? ORIGIN_ORDER.length + (o ? 0 : 1) : i;
  };
  return rank(a) - rank(b) || (a?.name ?? '').localeCompare(b?.name ?? '');
}

/** The runtime so far, or the whole runtime once it ended. */
export function runtimeMs(info: Pick<IProcessInfo, 'state' | 'startedAt' | 'exitedAt'>, serverNow: number): number {
  const end = info.exitedAt ?? (isActive(info) ? serverNow : info.startedAt);
  return end - info.startedAt;
}

/** The name shown for a process: its label, else its id. */
export function displayName(info: Pick<IProcessInfo, 'label' | 'processId'> | undefined): string {
  return info ? info.label || info.processId : '';
}

/** `sh -c CMD` (how the dialog starts things) is shown as CMD. */
export function displayCommand(argv: string[]): string {
  if (argv.length === 3 && /(^|\/)(ba|da|z)?sh$/.test(argv[0]) && argv[1] === '-c') {
    return argv[2];
  }
  return argv.map(a => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** A notification's sentence: `"train" exited 0 after 1:23`. */
export function exitMessage(info: IProcessInfo): string {
  const name = displayName(info);
  const never = info.exitCode === null && !info.signal;
  if (never && info.failure) {
    return `"${shortName(name)}" did not start: ${info.failure}`;
  }
  const exit = never ? 'ended' : describeExit(info.exitCode, info.signal);
  const after = info.exitedAt !== null ? ` after ${formatDuration(info.exitedAt - info.startedAt)}` : '';
  return `"${shortName(name)}" ${exit}${after}`;
}

function shortName(name: string): string {
  return name.length > 60 ? `${name.slice(0, 57)}...` : name;
}

/** "read-only, no network" for a row; '' for an unsandboxed process. */
export function describeSandbox(info: Pick<IProcessInfo, 'sandbox'>): string {
  const sandbox = info.sandbox;
  if (!sandbox || sandbox.mode === 'none') {
    return '';
  }
  return sandbox.network ? sandbox.mode : `${sandbox.mode}, no network`;
}

/** "1 restart", "3 restarts"; '' before the first. */
export function restartCount(info: Pick<IProcessInfo, 'restarts'>): string {
  const n = info.restarts ?? 0;
  return n > 0 ? `${n} restart${n === 1 ? '' : 's'}` : '';
}

/** "restarts on failure, 2 of at most 10"; '' without a policy (or `never`). */
export function describeRestart(info: Pick<IProcessInfo, 'restartPolicy' | 'restarts'>): string {
  const policy = info.restartPolicy;
  if (!policy || policy.policy === 'never') {
    return '';
  }
  const when = policy.policy === 'always' ? 'always' : 'on failure';
  const max = policy.maxRestarts ?? 10;
  return `restarts ${when}, ${info.restarts ?? 0} of at most ${max}`;
}

/**
 * What holds a process back or groups it: "queue gpu", and while it waits
 * "after train, prepare" (names through `nameOf`, e.g. the list's labels).
 */
export function waitingFor(
  info: Pick<IProcessInfo, 'state' | 'queue' | 'after'>,
  nameOf: (processId: string) => string = id => id
): string {
  const parts: string[] = [];
  if (info.queue) {
    parts.push(`queue ${info.queue}`);
  }
  if (info.state === 'queued' && info.after?.length) {
    parts.push(`after ${info.after.map(nameOf).join(', ')}`);
  }
  return parts.join(' · ');
}

/** "next run in 3 s" while it waits between two runs; '' otherwise. */
export function nextRunIn(info: Pick<IProcessInfo, 'state' | 'restartAt'>, serverNow: number): string {
  if (info.state !== 'restarting' || info.restartAt === null || info.restartAt === undefined) {
    return '';
  }
  const seconds = Math.ceil((info.restartAt - serverNow) / 1000);
  if (seconds <= 0) {
    return 'next run now';
  }
  return `next run in ${seconds < 60 ? `${seconds} s` : formatDuration(seconds * 1000)}`;
}

/** "gpu: 1 of 2 running, 3 queued". */
export function describeQueue(queue: IQueueInfo): string {
  return `${queue.name}: ${queue.running} of ${queue.parallel} running, ${queue.queued} queued`;
}
