/**
 * The "New process" form's values -> `process/start` params (no DOM, so jest
 * tests it in node). Limits are optional: empty means none; a bad value is an
 * error with one sentence naming the field, shown to the user.
 */
import { displayName, isActive } from './format';
import { IProcessInfo, IStartParams, RestartPolicyName, SandboxMode } from './protocol';

export type NewProcessRequest = Omit<IStartParams, 'processId'>;

export interface IFormValues {
  command: string;
  cwd: string;
  tty: boolean;
  pipeStdin: boolean;
  name: string;
  size?: { rows: number; cols: number };
  /** Wall-clock limit in seconds (`timeoutMs`); '' for none. */
  timeLimit?: string;
  /** Memory limit: bytes or with K/M/G/T (`limits.memoryBytes`); '' for none. */
  memoryLimit?: string;
  /** CPU limit in whole seconds (`limits.cpuSeconds`); '' for none. */
  cpuLimit?: string;
  /** '' for the server's policy (`default_sandbox`), else a mode (`sandbox`). */
  sandbox?: '' | SandboxMode;
  /** With a sandbox: no network (`sandbox.network: false`). */
  noNetwork?: boolean;
  /** '' or `never`: no restarts; else `restart.policy`. */
  restart?: '' | RestartPolicyName;
  /** `restart.maxRestarts`: a whole number >= 0; '' for the server's default. */
  maxRestarts?: string;
  /** `queue`: wait in this queue; '' for none (start at once). */
  queue?: string;
  /** `after`: processIds that must exit 0 first. */
  after?: string[];
}

export class FormError extends Error {}

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** `512M` -> 536870912; '' -> undefined; at least 1 MiB (the server's minimum). */
export function parseMemory(text: string): number | undefined {
  const value = text.trim();
  if (!value) {
    return undefined;
  }
  const match = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(value);
  if (!match) {
    throw new FormError(`Memory limit "${value}" is not a size like 512M or 2G.`);
  }
  const bytes = Math.floor(parseFloat(match[1]) * UNITS[match[2].toLowerCase()]);
  if (bytes < 2 ** 20) {
    throw new FormError('Memory limit must be at least 1M.');
  }
  return bytes;
}

/** Positive seconds; '' -> undefined. `whole` for the CPU limit (an rlimit counts seconds). */
export function parseSeconds(text: string, field: string, whole = false): number | undefined {
  const value = text.trim();
  if (!value) {
    return undefined;
  }
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0 || (whole && !Number.isInteger(seconds))) {
    const kind = whole ? 'a whole number of seconds' : 'a number of seconds';
    throw new FormError(`${field} "${value}" must be ${kind} greater than 0.`);
  }
  return seconds;
}

/** Turn the form's values into `process/start` params; throws FormError for a bad limit. */
export function startParams(values: IFormValues): NewProcessRequest {
  const command = values.command.trim();
  const cwd = values.cwd.trim();
  const params: NewProcessRequest = {
    argv: ['/bin/sh', '-c', command],
    tty: values.tty,
    label: values.name.trim() || command,
    lifetime: 'detached'
  };
  if (cwd && cwd !== '/' && cwd !== '.') {
    params.cwd = cwd;
  }
  if (values.tty) {
    params.size = values.size ?? { rows: 24, cols: 80 };
  } else if (values.pipeStdin) {
    params.pipeStdin = true;
  }
  const time = parseSeconds(values.timeLimit ?? '', 'Time limit');
  if (time !== undefined) {
    params.timeoutMs = Math.max(1, Math.round(time * 1000));
  }
  const memoryBytes = parseMemory(values.memoryLimit ?? '');
  const cpuSeconds = parseSeconds(values.cpuLimit ?? '', 'CPU limit', true);
  if (memoryBytes !== undefined || cpuSeconds !== undefined) {
    params.limits = {};
    if (memoryBytes !== undefined) {
      params.limits.memoryBytes = memoryBytes;
    }
    if (cpuSeconds !== undefined) {
      params.limits.cpuSeconds = cpuSeconds;
    }
  }
  Object.assign(params, managed(values));
  if (values.sandbox) {
    params.sandbox = values.noNetwork ? { mode: values.sandbox, network: false } : values.sandbox;
  } else if (values.noNetwork) {
    throw new FormError('No network needs a sandbox: choose read-only or workspace-write.');
  }
  return params;
}

/** Restart policy, queue and dependencies (SPEC 11); a field left empty is left out. */
function managed(values: IFormValues): Pick<NewProcessRequest, 'restart' | 'queue' | 'after'> {
  const params: Pick<NewProcessRequest, 'restart' | 'queue' | 'after'> = {};
  const max = (values.maxRestarts ?? '').trim();
  if (values.restart && values.restart !== 'never') {
    params.restart = { policy: values.restart };
    if (max) {
      if (!/^\d+$/.test(max)) {
        throw new FormError(`Max restarts "${max}" must be a whole number (0 or more).`);
      }
      params.restart.maxRestarts = Number(max);
    }
  } else if (max) {
    throw new FormError('Max restarts needs a restart policy: choose on failure or always.');
  }
  const queue = (values.queue ?? '').trim();
  if (queue) {
    params.queue = queue;
  }
  if (values.after?.length) {
    params.after = [...values.after];
  }
  return params;
}

/** How many processes "Start after" offers at most. */
const AFTER_CHOICES = 50;

/**
 * What "Start after" offers: processes that may still succeed (running,
 * queued, restarting), then ones that already exited 0, newest first. A
 * failed one is left out: a process after it would never start.
 */
export function afterChoices(processes: IProcessInfo[]): { value: string; text: string }[] {
  const newest = [...processes].sort((a, b) => b.startedAt - a.startedAt);
  const open = newest.filter(isActive);
  const done = newest.filter(p => !isActive(p) && p.state !== 'lost' && p.exitCode === 0 && !p.signal);
  return [...open, ...done].slice(0, AFTER_CHOICES).map(p => ({
    value: p.processId,
    text: `${displayName(p)} (${isActive(p) ? p.state : 'exited 0'})`
  }));
}
