/**
 * Models over an `ExecConnection`: the live process list and one process's
 * output stream. DOM-free (the views render what these emit), so the seq,
 * resume and gap rules below are unit-tested in node.
 *
 * The output rule (SPEC 5): one seq counter per process covers output,
 * exited and closed. `ProcessStream.cursor` is the highest seq whose effect
 * has been applied. A notification at `cursor + 1` is applied at once; one at
 * or below is a duplicate and dropped; one above waits in `pending` while a
 * `process/read` loop fills the gap from the cursor. Reads are the authority:
 * their chunks are applied in order whatever their seq, and an empty read
 * moves the cursor to `nextSeq - 1` (past exited/closed markers). The loop
 * stops when a read comes back empty or when it has reached the pending
 * notifications (the live stream), so it never chases a busy process's live
 * edge one round trip at a time. Output is never shown twice and never
 * skipped, across reconnects, resumes and slow-consumer drops alike.
 */
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { ConnectionLostError, ExecConnection, IConnectedArgs, RpcError } from './connection';
import { isActive } from './format';
import {
  decodeChunk,
  encodeText,
  ErrorCode,
  IProcessInfo,
  IQueueInfo,
  IReadResult,
  ISize,
  IStartParams,
  newProcessId,
  Notification,
  ProcessState,
  SignalName,
  Stream
} from './protocol';

/** A process never moves back down this order (a restart goes running -> restarting -> running). */
const STATE_ORDER: Record<ProcessState, number> = {
  queued: 0,
  running: 1,
  restarting: 1,
  exited: 2,
  closed: 3,
  lost: 3
};

/** How often `poll()` refreshes the list: usage and ports are kept within 2 s (SPEC 11). */
export const POLL_MS = 2000;

/** The live list of every process of the server, from `process/list {watch: true}`. */
export class ProcessListModel implements IDisposable {
  constructor(readonly connection: ExecConnection) {
    connection.connected.connect(this._onConnected, this);
    connection.notification.connect(this._onNotification, this);
  }

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Newest first. */
  get processes(): IProcessInfo[] {
    return [...this._byId.values()].sort((a, b) => b.startedAt - a.startedAt);
  }

  /** False until the first list arrived (so a view can say "loading"). */
  get loaded(): boolean {
    return this._loaded;
  }

  /** Server clock minus client clock, estimated from `process/started`; 0 until known. */
  get clockOffsetMs(): number {
    return this._clockOffset;
  }

  get(processId: string): IProcessInfo | undefined {
    return this._byId.get(processId);
  }

  /** Server-side "now", for runtimes of running processes. */
  serverNow(): number {
    return Date.now() + this._clockOffset;
  }

  /** Keep the list live (the connection stays open) until the handle is disposed. */
  watch(): IDisposable {
    const handle = this.connection.acquire();
    if (this.connection.status === 'connected' && !this._listing) {
      void this._refresh();
    }
    return handle;
  }

  /** The server's queues (`queue/list`), by name; empty from a server without queues. */
  get queues(): IQueueInfo[] {
    return this._queues;
  }

  /**
   * Set a queue's parallelism (`queue/set`); the queues are listed again at
   * once, since a wider queue starts its next processes now.
   */
  async setQueue(name: string, parallel: number): Promise<void> {
    await this.connection.request('queue/set', { name, parallel });
    await this._refreshQueues();
  }

  /** How many processes run (queued and restarting ones count: they are not done). */
  get activeCount(): number {
    let n = 0;
    for (const info of this._byId.values()) {
      n += isActive(info) ? 1 : 0;
    }
    return n;
  }

  /**
   * Also refresh the whole list every `intervalMs` until the handle is
   * disposed: usage and ports change without a notification (SPEC 11 keeps
   * them current in `process/list`). Shared by every holder (panel, views).
   */
  poll(intervalMs = POLL_MS): IDisposable {
    const watch = this.watch();
    this._pollers++;
    this._pollTimer ??= setInterval(() => {
      if (this.connection.status === 'connected' && !this._listing) {
        void this._refresh();
      }
    }, intervalMs);
    return new DisposableDelegate(() => {
      watch.dispose();
      if (--this._pollers === 0 && this._pollTimer) {
        clearInterval(this._pollTimer);
        this._pollTimer = null;
      }
    });
  }

  /**
   * Forget a process and delete its log (`process/remove`: it is terminated
   * first if it runs, as the REST DELETE does). Rejects with the server's
   * RpcError (an unknown id, no permission) or a ConnectionLostError.
   */
  async remove(processId: string): Promise<void> {
    await this.connection.request('process/remove', { processId });
    if (this._byId.delete(processId)) {
      this._changed.emit();
    }
  }

  /**
   * Remove many ("Clear finished"), a few at a time. Resolves with the ids
   * that could not be removed; removed ones leave the list at once.
   */
  async removeAll(processIds: string[], parallel = 8): Promise<string[]> {
    const queue = [...processIds];
    const failed: string[] = [];
    const worker = async () => {
      let id: string | undefined;
      while ((id = queue.shift()) !== undefined) {
        await this.remove(id).catch(() => failed.push(id!));
      }
    };
    await Promise.all(Array.from({ length: Math.min(parallel, queue.length) }, worker));
    return failed;
  }

  /** Start a process; the list learns of it from `process/started`. */
  async start(params: Omit<IStartParams, 'processId'> & { processId?: string }): Promise<string> {
    const processId = params.processId ?? newProcessId();
    await this.connection.request('process/start', { lifetime: 'detached', ...params, processId });
    return processId;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (!this._disposed) {
      this._disposed = true;
      this._pollTimer && clearInterval(this._pollTimer);
      Signal.clearData(this);
    }
  }

  private _onConnected(): void {
    void this._refresh();
  }

  /**
   * Take a snapshot, then re-apply what was notified while it was in flight:
   * merging never moves a process backwards (running < exited < closed).
   */
  private async _refresh(): Promise<void> {
    this._listing = true;
    this._buffered = [];
    try {
      const { processes } = await this.connection.request('process/list', { watch: true });
      this._byId = new Map(processes.map(p => [p.processId, p]));
      const buffered = this._buffered;
      this._buffered = null;
      buffered.forEach(n => this._apply(n));
      this._loaded = true;
      this._changed.emit();
    } catch {
      // Lost connection: the next `connected` refreshes again.
    } finally {
      this._listing = false;
      this._buffered = null;
    }
    await this._refreshQueues();
  }

  /**
   * List the queues (their counts change without a notification). One call
   * at a time; a call made meanwhile goes round once more. A server without
   * queues (MethodNotFound) is not asked again.
   */
  private async _refreshQueues(): Promise<void> {
    if (this._queuesListing) {
      this._queuesAgain = true;
      return;
    }
    this._queuesListing = true;
    try {
      do {
        this._queuesAgain = false;
        if (!this._hasQueues || this.connection.status !== 'connected') {
          return;
        }
        try {
          const { queues } = await this.connection.request('queue/list', {});
          const sorted = [...queues].sort((a, b) => a.name.localeCompare(b.name));
          if (JSON.stringify(sorted) !== JSON.stringify(this._queues)) {
            this._queues = sorted;
            this._changed.emit();
          }
        } catch (error) {
          if (error instanceof RpcError && error.code === ErrorCode.MethodNotFound) {
            this._hasQueues = false;
          }
          return;
        }
      } while (this._queuesAgain && !this._disposed);
    } finally {
      this._queuesListing = false;
    }
  }

  private _onNotification(_: ExecConnection, n: Notification): void {
    if (!this._buffered && n.method === 'process/exited' && n.params.exitCode === null && !n.params.signal) {
      // It never ran (a failed dependency, terminated while queued): why is only in
      // the list (`failure`), so take the list before anyone is told it ended.
      void this._refresh();
      return;
    }
    if (this._buffered) {
      this._buffered.push(n);
    } else if (this._apply(n)) {
      this._changed.emit();
      // A queued process that starts or ends changes its queue's counts.
      const queue = 'processId' in n.params ? this._byId.get(n.params.processId)?.queue : n.params.process?.queue;
      if (queue) {
        void this._refreshQueues();
      }
    }
  }

  /** Apply one notification; true when the list changed. */
  private _apply(n: Notification): boolean {
    switch (n.method) {
      case 'process/started': {
        const info = n.params.process;
        const known = this._byId.get(info.processId);
        this._clockOffset = info.startedAt - Date.now();
        this._byId.set(info.processId, known ? this._merge(known, info) : info);
        return true;
      }
      case 'process/exited':
        return this._update(n.params.processId, {
          state: 'exited',
          exitCode: n.params.exitCode,
          signal: n.params.signal,
          exitedAt: this.serverNow()
        });
      case 'process/closed':
        return this._update(n.params.processId, { state: 'closed' });
      case 'process/restarted':
        return this._update(n.params.processId, {
          state: 'running',
          pid: n.params.pid,
          restarts: n.params.restarts
        });
      case 'process/removed':
        return this._byId.delete(n.params.processId);
      default:
        return false;
    }
  }

  private _update(processId: string, patch: Partial<IProcessInfo>): boolean {
    const known = this._byId.get(processId);
    if (!known) {
      return false;
    }
    this._byId.set(processId, this._merge(known, patch));
    return true;
  }

  private _merge(known: IProcessInfo, patch: Partial<IProcessInfo>): IProcessInfo {
    if (patch.state && STATE_ORDER[patch.state] < STATE_ORDER[known.state]) {
      return known;
    }
    const merged = { ...known, ...patch };
    // Keep the server's exit time when it already gave one.
    merged.exitedAt = known.exitedAt ?? merged.exitedAt;
    return merged;
  }

  private _byId = new Map<string, IProcessInfo>();
  private _queues: IQueueInfo[] = [];
  private _hasQueues = true;
  private _queuesListing = false;
  private _queuesAgain = false;
  private _pollers = 0;
  private _pollTimer: ReturnType<typeof setInterval> | null = null;
  private _buffered: Notification[] | null = null;
  private _listing = false;
  private _loaded = false;
  private _clockOffset = 0;
  private _disposed = false;
  private _changed = new Signal<this, void>(this);
}

/** What a view renders, in order. */
export type OutputEvent =
  | { kind: 'output'; seq: number; stream: Stream; data: Uint8Array }
  /** Output in `[fromSeq, toSeq]` was dropped by the server's retention limit (SPEC 6). */
  | { kind: 'dropped'; fromSeq: number; toSeq: number }
  /**
   * Its restart policy began run `restarts + 1` after the previous run's exit
   * (SPEC 11). Seen live and in a subscribe replay; a read from the log skips it.
   */
  | { kind: 'restarted'; seq: number; restarts: number; exitCode: number | null; signal: string | null };

export interface IStreamOptions {
  /** Budget of one `process/read` while catching up. */
  maxBytes?: number;
}

/**
 * One process's output, from seq 0 (the server keeps it on disk), then live;
 * plus its stdin, size and signals. A view owns one and disposes it on close.
 */
export class ProcessStream implements IDisposable {
  constructor(
    readonly connection: ExecConnection,
    readonly processId: string,
    options: IStreamOptions = {}
  ) {
    this._maxBytes = options.maxBytes ?? 256 * 1024;
    connection.connected.connect(this._onConnected, this);
    connection.notification.connect(this._onNotification, this);
    this._handle = connection.acquire();
    if (connection.status === 'connected') {
      void this._sync();
    }
  }

  /** Output and drop notices, strictly in seq order, each exactly once. */
  get output(): ISignal<this, OutputEvent> {
    return this._output;
  }

  /** Exit status, catch-up progress or error changed. */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** Highest seq applied so far (0: nothing yet). */
  get cursor(): number {
    return this._cursor;
  }

  /** True once history has been read up to the live edge. */
  get caughtUp(): boolean {
    return this._caughtUp;
  }

  get exited(): boolean {
    return this._exited;
  }

  get closed(): boolean {
    return this._closed;
  }

  /**
   * True once every output of a closed process has been applied, in seq
   * order: only then may a view write "[process exited]" after it. `exited`
   * and `closed` come earlier (a read says the process has ended while its
   * replay is still on the way).
   */
  get atEnd(): boolean {
    return this._atEnd;
  }

  get exitCode(): number | null {
    return this._exitCode;
  }

  get signal(): string | null {
    return this._signal;
  }

  /** True once a write was refused because stdin is closed (or never was open). */
  get stdinClosed(): boolean {
    return this._stdinClosed;
  }

  /** Set when the process is unknown to the server (removed) or reading failed. */
  get error(): string | null {
    return this._error;
  }

  /**
   * Queue input for stdin. Writes go out one at a time in order; input typed
   * while one is in flight is merged into the next. Each carries a `writeId`,
   * so a write retried after a reconnect is not written twice (SPEC 4).
   */
  write(text: string, eof = false): void {
    this._writes.push({ text, eof, writeId: null });
    void this._pumpWrites();
  }

  async resize(size: ISize): Promise<void> {
    if (this.connection.status === 'connected' && !this._exited) {
      await this.connection.request('process/resize', { processId: this.processId, ...size });
    }
  }

  async sendSignal(signal: SignalName): Promise<void> {
    await this.connection.request('process/signal', { processId: this.processId, signal });
  }

  async terminate(graceMs?: number): Promise<boolean> {
    const params = graceMs === undefined ? { processId: this.processId } : { processId: this.processId, graceMs };
    return (await this.connection.request('process/terminate', params)).running;
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    if (this.connection.status === 'connected' && this._subscribedSession) {
      this.connection.request('process/unsubscribe', { processId: this.processId }).catch(() => undefined);
    }
    this._handle.dispose();
    Signal.clearData(this);
  }

  private _onConnected(_: ExecConnection, args: IConnectedArgs): void {
    // A resumed session kept our subscription; a new one did not.
    if (!args.resumed) {
      this._subscribedSession = null;
    }
    void this._sync();
    void this._pumpWrites();
  }

  private _onNotification(_: ExecConnection, n: Notification): void {
    if (this._disposed || !('processId' in n.params) || n.params.processId !== this.processId) {
      return;
    }
    if (n.method === 'process/exited') {
      this._setExit(n.params.exitCode, n.params.signal);
    } else if (n.method === 'process/closed') {
      this._closed = this._exited = true;
    } else if (n.method !== 'process/output' && n.method !== 'process/restarted') {
      return;
    }
    const seq = n.params.seq;
    if (seq === this._cursor + 1) {
      this._apply(n);
      this._drain();
    } else if (seq > this._cursor) {
      this._pending.set(seq, n);
      if (!this._syncing) {
        void this._sync(); // a running sync goes round again while anything is pending
      }
    }
    if (n.method !== 'process/output') {
      this._changed.emit();
    }
  }

  /**
   * Subscribe (unless this session already is), then read from the cursor up
   * to the live stream. A call made while one runs asks it to go round again.
   */
  private async _sync(): Promise<void> {
    if (this._syncing) {
      this._again = true;
      return;
    }
    this._syncing = true;
    try {
      do {
        this._again = false;
        const session = this.connection.sessionId;
        if (this._subscribedSession !== session && !this._closed) {
          // The replay of retained output arrives as notifications: applied or pending.
          await this.connection.request('process/subscribe', {
            processId: this.processId,
            afterSeq: this._cursor
          });
          this._subscribedSession = session;
        }
        await this._catchUp();
      } while ((this._again || this._pending.size > 0) && !this._disposed);
      this._caughtUp = true;
      this._changed.emit();
    } catch (error) {
      if (error instanceof RpcError) {
        this._error = error.message;
        this._changed.emit();
      }
      // ConnectionLostError: the next `connected` syncs again from the cursor.
    } finally {
      this._syncing = false;
      // A request to go round that came in as this run failed must not be lost.
      const wanted = this._again || this._pending.size > 0;
      if (wanted && !this._error && !this._disposed && this.connection.status === 'connected') {
        void this._sync();
      }
    }
  }

  private async _catchUp(): Promise<void> {
    for (;;) {
      if (this._disposed) {
        return;
      }
      this._bridged = false;
      const result = await this.connection.request('process/read', {
        processId: this.processId,
        afterSeq: this._cursor,
        maxBytes: this._maxBytes
      });
      if (this._disposed) {
        return;
      }
      const fresh = this._applyRead(result);
      // Subscribed, and the read met the notification stream (or brought
      // nothing it had not already delivered): we are at the live edge.
      const live = this._subscribedSession === this.connection.sessionId;
      // A closed process's output is finite: read on to an empty read, which says the end is reached.
      if (result.chunks.length === 0 || (live && (this._bridged || fresh === 0) && !result.closed)) {
        return;
      }
    }
  }

  /** Apply one read result; returns how many of its chunks were new. */
  private _applyRead(result: IReadResult): number {
    let fresh = 0;
    // firstSeq only moves when output is dropped (SPEC 4), so this is exact.
    if (this._cursor + 1 < result.firstSeq) {
      this._output.emit({ kind: 'dropped', fromSeq: this._cursor + 1, toSeq: result.firstSeq - 1 });
      this._cursor = result.firstSeq - 1;
    }
    for (const c of result.chunks) {
      if (c.seq > this._cursor) {
        this._emitChunk(c.seq, c.stream, c.chunk);
        fresh++;
      }
    }
    if (result.chunks.length === 0) {
      // Nothing after the cursor but exited/closed markers: skip over them.
      this._cursor = Math.max(this._cursor, result.nextSeq - 1);
      this._atEnd ||= result.closed;
    }
    this._drain();
    if (result.exited && !this._exited) {
      this._setExit(result.exitCode, result.signal);
    }
    if (result.closed) {
      this._closed = this._exited = true;
    }
    this._changed.emit();
    return fresh;
  }

  /** Apply pending notifications that now follow the cursor; forget those behind it. */
  private _drain(): void {
    if (!this._pending.size) {
      return;
    }
    for (const seq of [...this._pending.keys()]) {
      if (seq <= this._cursor) {
        this._pending.delete(seq);
      }
    }
    let next: Notification | undefined;
    while ((next = this._pending.get(this._cursor + 1))) {
      this._pending.delete(this._cursor + 1);
      this._apply(next);
      this._bridged = this._pending.size === 0;
    }
  }

  private _apply(n: Notification): void {
    if (n.method === 'process/output') {
      this._emitChunk(n.params.seq, n.params.stream, n.params.chunk);
    } else if (n.method === 'process/restarted') {
      this._cursor = n.params.seq;
      const { seq, restarts, exitCode, signal } = n.params;
      this._output.emit({ kind: 'restarted', seq, restarts, exitCode, signal });
    } else if ('seq' in n.params) {
      this._atEnd ||= n.method === 'process/closed';
      this._cursor = n.params.seq;
    }
  }

  private _emitChunk(seq: number, stream: Stream, chunk: string): void {
    this._cursor = seq;
    this._output.emit({ kind: 'output', seq, stream, data: decodeChunk(chunk) });
  }

  private _setExit(exitCode: number | null, signal: string | null): void {
    this._exited = true;
    this._exitCode = exitCode;
    this._signal = signal;
  }

  private async _pumpWrites(): Promise<void> {
    if (this._writing) {
      return;
    }
    this._writing = true;
    try {
      while (this._writes.length && !this._disposed && this.connection.status === 'connected') {
        const head = this._writes[0];
        if (head.writeId === null) {
          // Merge untried input behind it, up to an EOF, into one write.
          while (!head.eof && this._writes.length > 1 && this._writes[1].writeId === null) {
            const next = this._writes.splice(1, 1)[0];
            head.text += next.text;
            head.eof = next.eof;
          }
          head.writeId = newProcessId('w');
        }
        const params = { processId: this.processId, chunk: encodeText(head.text), writeId: head.writeId };
        try {
          const { status } = await this.connection.request(
            'process/write',
            head.eof ? { ...params, eof: true } : params
          );
          if (status === 'starting') {
            await new Promise(resolve => setTimeout(resolve, 50));
            continue;
          }
          this._writes.shift();
          if (status !== 'accepted') {
            this._writes = [];
            this._stdinClosed = true;
            this._changed.emit();
          }
        } catch (error) {
          if (error instanceof ConnectionLostError) {
            return; // retried with the same writeId after `connected`
          }
          this._writes.shift();
        }
      }
    } finally {
      this._writing = false;
    }
  }

  private _maxBytes: number;
  private _handle: IDisposable;
  private _cursor = 0;
  private _caughtUp = false;
  private _syncing = false;
  private _again = false;
  private _bridged = false;
  /** Notifications ahead of the cursor, by seq, waiting for a read to reach them. */
  private _pending = new Map<number, Notification>();
  private _subscribedSession: string | null = null;
  private _exited = false;
  private _closed = false;
  private _atEnd = false;
  private _exitCode: number | null = null;
  private _signal: string | null = null;
  private _error: string | null = null;
  private _stdinClosed = false;
  private _writes: { text: string; eof: boolean; writeId: string | null }[] = [];
  private _writing = false;
  private _disposed = false;
  private _output = new Signal<this, OutputEvent>(this);
  private _changed = new Signal<this, void>(this);
}
