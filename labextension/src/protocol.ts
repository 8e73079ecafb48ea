/**
 * Wire types of the jupyter-exec protocol (SPEC.md), mirrored from the Python
 * side (`jupyter_exec/wire/models.py`, `jupyter_exec/wire/protocol.py`).
 *
 * Plain data only: no DOM, no JupyterLab, no I/O, so the connection and the
 * models can be unit-tested in node. When the Python side changes a name,
 * change it here; nothing else in the extension spells a method name.
 */

/**
 * The one URL namespace shared with the Python extension: the websocket is
 * `{base_url}api/exec/ws`, the REST mirror `{base_url}api/exec/processes` (SPEC 1, 8).
 */
export const EXEC_NAMESPACE = 'api/exec';

/** URL path (relative to the server's base URL) of the JSON-RPC websocket. */
export const WS_PATH = `${EXEC_NAMESPACE}/ws`;

/** URL path (relative to the server's base URL) of the REST process collection. */
export const PROCESSES_PATH = `${EXEC_NAMESPACE}/processes`;

/** JSON-RPC error codes (SPEC 7). */
export const ErrorCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InvalidParams: -32602,
  InternalError: -32603
} as const;

/**
 * `queued` and `restarting` come from SPEC 11 (queues, restart policies);
 * `lost`: its exec daemon died while it ran, its output stays readable.
 */
export type ProcessState = 'queued' | 'running' | 'restarting' | 'exited' | 'closed' | 'lost';
export type Stream = 'stdout' | 'stderr' | 'pty';
export type Lifetime = 'connection' | 'detached';
export type SignalName =
  | 'interrupt'
  | 'terminate'
  | 'kill'
  | 'hangup'
  | 'quit'
  | 'user1'
  | 'user2'
  | 'stop'
  | 'continue';

/** One process as `process/list` and the REST mirror describe it (SPEC 4). */
export interface IProcessInfo {
  processId: string;
  argv: string[];
  cwd: string;
  tty: boolean;
  pid: number | null;
  label: string | null;
  lifetime: Lifetime;
  state: ProcessState;
  /** Milliseconds since the epoch, server clock. */
  startedAt: number;
  exitedAt: number | null;
  exitCode: number | null;
  signal: string | null;
  nextSeq: number;
  firstSeq: number;
  outputBytes: number;
  /** Present when the server says so; not in every version. */
  pipeStdin?: boolean;
  /** The wall-clock limit it was started with, and whether it fired. */
  timeoutMs?: number | null;
  timedOut?: boolean;
  limits?: ILimits | null;
  /** 'cpu' or 'memory' when the exit is known to come from that limit. */
  limitExceeded?: string | null;
  /** The sandbox it runs in (docs/sandbox.md); null or absent: none. */
  sandbox?: ISandbox | null;
  /** TCP ports the process tree listens on (SPEC 11); absent from older servers. */
  ports?: IPort[];
  /** CPU and memory of the whole tree (SPEC 11); final figures after the exit. */
  usage?: IUsage | null;
  /** Where it was started from (SPEC 11). */
  origin?: IOrigin | null;
  /** Its restart policy (SPEC 11); null or absent: never restarted. */
  restartPolicy?: IRestartPolicy | null;
  /** How many times it was restarted so far. */
  restarts?: number;
  /** The queue it waits in or runs under (SPEC 11); null or absent: none. */
  queue?: string | null;
  /** The processIds that must exit 0 before it starts (SPEC 11). */
  after?: string[];
  /** While `restarting`: when its next run starts (ms since the epoch, server clock). */
  restartAt?: number | null;
  /** Why it ended without running, e.g. the dependency that failed (SPEC 4, 11). */
  failure?: string | null;
}

export type RestartPolicyName = 'never' | 'on-failure' | 'always';

/** `process/start` `restart`, and `restartPolicy` in ProcessInfo (SPEC 11). */
export interface IRestartPolicy {
  policy: RestartPolicyName;
  /** The server's default is 10. */
  maxRestarts?: number;
  /** The first backoff; the server's default is 1000, doubling up to 60 s. */
  delayMs?: number;
}

/** One queue as `queue/list` answers it (SPEC 11). */
export interface IQueueInfo {
  name: string;
  parallel: number;
  running: number;
  queued: number;
}

/** A listening TCP socket of the tree; `url` reaches it through Jupyter (jupyter-server-proxy). */
export interface IPort {
  port: number;
  address: string;
  pid: number;
  url?: string;
}

export interface IUsage {
  cpuPercent: number;
  cpuSeconds: number;
  rssBytes: number;
  peakRssBytes: number;
  processes: number;
}

export type OriginKind = 'notebook' | 'console' | 'agent' | 'cli' | 'panel' | 'client';

/** `{kind: "notebook", name: "analysis.ipynb"}`, `{kind: "agent", name: "codex"}`... */
export interface IOrigin {
  kind: OriginKind | string;
  name: string;
}

export type SandboxMode = 'none' | 'workspace-write' | 'read-only';

/** What a sandboxed process may do: `writableRoots` are the real paths it may write. */
export interface ISandbox {
  mode: SandboxMode;
  network: boolean;
  writableRoots: string[];
}

/** A `process/start` sandbox request: a mode, or a mode with the network on or off. */
export type SandboxRequest = SandboxMode | { mode: SandboxMode; network?: boolean };

/** Per-process resource limits (`process/start` `limits`, rlimits in the child). */
export interface ILimits {
  memoryBytes?: number;
  cpuSeconds?: number;
}

export interface ISize {
  rows: number;
  cols: number;
}

export interface IStartParams {
  processId: string;
  argv: string[];
  /** Absolute, or relative to the server's root directory (Jupyter extension only). */
  cwd?: string;
  env?: Record<string, string>;
  inheritEnv?: boolean;
  tty?: boolean;
  pipeStdin?: boolean;
  size?: ISize;
  lifetime?: Lifetime;
  label?: string;
  /** Terminated as by `process/terminate` when this passes. */
  timeoutMs?: number;
  limits?: ILimits;
  sandbox?: SandboxRequest;
  /** Where it comes from (SPEC 11); servers that do not know it ignore it (SPEC 4). */
  origin?: IOrigin;
  /** Restart it when it ends (SPEC 11). */
  restart?: IRestartPolicy;
  /** Wait in this queue until it has room (SPEC 11). */
  queue?: string;
  /** Start only once all of these exited 0 (SPEC 11). */
  after?: string[];
}

export interface IChunk {
  seq: number;
  stream: Stream;
  /** Base64. */
  chunk: string;
}

export interface IReadResult {
  chunks: IChunk[];
  nextSeq: number;
  exited: boolean;
  exitCode: number | null;
  signal: string | null;
  closed: boolean;
  failure: string | null;
  firstSeq: number;
}

export type WriteStatus = 'accepted' | 'unknownProcess' | 'stdinClosed' | 'starting';

export interface IInitializeResult {
  sessionId: string;
  serverInfo: { name: string; version: string };
  capabilities: Record<string, unknown>;
}

/** Request params and results by method name (SPEC 2, 4). */
export interface IMethods {
  initialize: {
    params: { clientName: string; resumeSessionId?: string };
    result: IInitializeResult;
  };
  'process/start': { params: IStartParams; result: { processId: string } };
  'process/read': {
    params: { processId: string; afterSeq?: number; maxBytes?: number; waitMs?: number };
    result: IReadResult;
  };
  'process/write': {
    params: { processId: string; chunk: string; writeId?: string; eof?: boolean };
    result: { status: WriteStatus };
  };
  'process/signal': { params: { processId: string; signal: SignalName }; result: object };
  'process/terminate': {
    params: { processId: string; graceMs?: number };
    result: { running: boolean };
  };
  'process/resize': { params: { processId: string } & ISize; result: object };
  'process/subscribe': {
    params: { processId: string; afterSeq?: number };
    result: { nextSeq: number };
  };
  'process/unsubscribe': { params: { processId: string }; result: object };
  'process/list': { params: { watch?: boolean }; result: { processes: IProcessInfo[] } };
  /** Terminate if running, then forget it and delete its log (the REST DELETE's method). */
  'process/remove': { params: { processId: string }; result: object };
  'queue/list': { params: object; result: { queues: IQueueInfo[] } };
  /** Set a queue's parallelism (a new queue has 1). */
  'queue/set': { params: { name: string; parallel: number }; result: object };
}

export type Method = keyof IMethods;

/** Server-to-client notifications (SPEC 5). */
export type Notification =
  | {
      method: 'process/output';
      params: { processId: string; seq: number; stream: Stream; chunk: string };
    }
  | {
      method: 'process/exited';
      params: { processId: string; seq: number; exitCode: number | null; signal: string | null };
    }
  | { method: 'process/closed'; params: { processId: string; seq: number } }
  | { method: 'process/started'; params: { process: IProcessInfo } }
  | { method: 'process/removed'; params: { processId: string } }
  | {
      method: 'process/restarted';
      params: { processId: string; seq: number; restarts: number; pid: number | null; exitCode: number | null; signal: string | null };
    };

/** Decode a base64 chunk to bytes (`atob` exists in browsers and node >= 16). */
export function decodeChunk(chunk: string): Uint8Array {
  const binary = atob(chunk);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}

/** Encode text as UTF-8 then base64, the form `process/write` takes. */
export function encodeText(text: string): string {
  const bytes = new TextEncoder().encode(text);
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** A client-chosen process id (SPEC 3): short, unique enough, recognisably ours. */
export function newProcessId(prefix = 'lab'): string {
  return `${prefix}-${Math.random().toString(36).slice(2, 10)}`;
}
