/**
 * An in-memory exec server speaking SPEC.md over fake websockets, just enough
 * to drive the connection and models through reconnects, resumes, dropped
 * notifications and retention loss. Messages are delivered asynchronously
 * (a macrotask each way), as over a real socket.
 */
import { IWebSocketLike } from '../connection';
import { IProcessInfo, IQueueInfo } from '../protocol';

interface IEvent {
  seq: number;
  kind: 'output' | 'exited' | 'closed' | 'restarted';
  stream?: string;
  chunk?: string;
  exitCode?: number | null;
  signal?: string | null;
}

interface IProc {
  info: IProcessInfo;
  events: IEvent[];
  nextSeq: number;
  firstSeq: number;
  stdin: string[];
  writeIds: Set<string>;
}

interface ISession {
  id: string;
  socket: FakeSocket | null;
  subscriptions: Set<string>;
  watch: boolean;
  initialized: boolean;
  /** Simulate a slow client: notifications to it are silently dropped. */
  dropNotifications: boolean;
}

const tick = () => new Promise(resolve => setTimeout(resolve, 0));

/** Let every queued message and handler run. */
export async function flush(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) {
    await tick();
  }
}

export const b64 = (s: string) => Buffer.from(s, 'utf-8').toString('base64');
export const text = (bytes: Uint8Array) => Buffer.from(bytes).toString('utf-8');

export class FakeSocket implements IWebSocketLike {
  readyState = 0;
  onopen: ((event: unknown) => void) | null = null;
  onclose: ((event: unknown) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  session: ISession | null = null;
  sent: any[] = [];

  constructor(
    readonly server: FakeServer,
    readonly url: string
  ) {}

  send(data: string): void {
    if (this.readyState !== 1) {
      throw new Error('socket not open');
    }
    const message = JSON.parse(data);
    this.sent.push(message);
    setTimeout(() => this.server.handle(this, message), 0);
  }

  close(): void {
    this.server.drop(this);
  }

  /** Server side: deliver one message to the client. */
  deliver(message: unknown): void {
    if (this.readyState === 1) {
      const data = JSON.stringify(message);
      setTimeout(() => this.readyState === 1 && this.onmessage?.({ data }), 0);
    }
  }
}

export class FakeServer {
  processes = new Map<string, IProc>();
  sessions = new Map<string, ISession>();
  sockets: FakeSocket[] = [];
  /** Every request and notification received, in order, for assertions. */
  received: { method: string; params: any }[] = [];
  /** While true, new sockets fail to open (server down). */
  down = false;
  /** How many recent output events `process/subscribe` replays (the server's memory). */
  replayLimit = Infinity;
  /** The queues `queue/list` answers (SPEC 11); null: a server without queues. */
  queues: Map<string, IQueueInfo> | null = new Map();
  /** While true, `resumeSessionId` is ignored (server restarted, sessions lost). */
  forgetSessions = false;
  private _sessionCount = 0;

  createSocket = (url: string): FakeSocket => {
    const socket = new FakeSocket(this, url);
    this.sockets.push(socket);
    setTimeout(() => {
      if (this.down) {
        socket.readyState = 3;
        socket.onclose?.({});
      } else {
        socket.readyState = 1;
        socket.onopen?.({});
      }
    }, 0);
    return socket;
  };

  get openSockets(): FakeSocket[] {
    return this.sockets.filter(s => s.readyState === 1);
  }

  /** Close every socket from the server side (restart, network blip). */
  disconnectAll(): void {
    for (const s of this.openSockets) {
      this.drop(s);
    }
  }

  drop(socket: FakeSocket): void {
    if (socket.readyState === 3) {
      return;
    }
    socket.readyState = 3;
    if (socket.session) {
      socket.session.socket = null;
    }
    setTimeout(() => socket.onclose?.({}), 0);
  }

  calls(method: string): any[] {
    return this.received.filter(r => r.method === method).map(r => r.params);
  }

  addProcess(processId: string, tty = false): IProc {
    const proc: IProc = {
      info: {
        processId,
        argv: ['sh'],
        cwd: '/',
        tty,
        pid: 100,
        label: null,
        lifetime: 'detached',
        state: 'running',
        startedAt: Date.now(),
        exitedAt: null,
        exitCode: null,
        signal: null,
        nextSeq: 1,
        firstSeq: 1,
        outputBytes: 0
      },
      events: [],
      nextSeq: 1,
      firstSeq: 1,
      stdin: [],
      writeIds: new Set()
    };
    this.processes.set(processId, proc);
    this.notifyWatchers({ method: 'process/started', params: { process: { ...proc.info } } });
    return proc;
  }

  /** The child writes `data`; subscribers get a notification unless dropping. */
  emit(processId: string, data: string, stream = 'stdout'): number {
    const proc = this.processes.get(processId)!;
    const event: IEvent = { seq: proc.nextSeq++, kind: 'output', stream, chunk: b64(data) };
    proc.events.push(event);
    this.notifySubscribers(processId, {
      method: 'process/output',
      params: { processId, seq: event.seq, stream, chunk: event.chunk }
    });
    return event.seq;
  }

  /** A restart policy begins the next run: one seq in the same stream (SPEC 11). */
  restart(processId: string, restarts: number, exitCode: number | null): number {
    const proc = this.processes.get(processId)!;
    const event: IEvent = { seq: proc.nextSeq++, kind: 'restarted', exitCode, signal: null };
    proc.events.push(event);
    Object.assign(proc.info, { restarts, pid: 100 + restarts });
    const params = { processId, seq: event.seq, restarts, pid: 100 + restarts, exitCode, signal: null };
    for (const session of this.sessions.values()) {
      if (session.subscriptions.has(processId) || session.watch) {
        this.send(session, { method: 'process/restarted', params });
      }
    }
    return event.seq;
  }

  exit(processId: string, exitCode: number | null, signal: string | null = null): void {
    const proc = this.processes.get(processId)!;
    const exited: IEvent = { seq: proc.nextSeq++, kind: 'exited', exitCode, signal };
    const closed: IEvent = { seq: proc.nextSeq++, kind: 'closed' };
    proc.events.push(exited, closed);
    Object.assign(proc.info, { state: 'closed', exitCode, signal, exitedAt: Date.now() });
    const exitedMsg = { method: 'process/exited', params: { processId, seq: exited.seq, exitCode, signal } };
    const closedMsg = { method: 'process/closed', params: { processId, seq: closed.seq } };
    for (const m of [exitedMsg, closedMsg]) {
      for (const session of this.sessions.values()) {
        if (session.subscriptions.has(processId) || session.watch) {
          this.send(session, m);
        }
      }
    }
  }

  /** Forget output up to and including `seq` (a retention limit, SPEC 6). */
  forget(processId: string, seq: number): void {
    const proc = this.processes.get(processId)!;
    proc.events = proc.events.filter(e => e.seq > seq);
    proc.firstSeq = seq + 1;
  }

  remove(processId: string): void {
    this.processes.delete(processId);
    this.notifyWatchers({ method: 'process/removed', params: { processId } });
  }

  handle(socket: FakeSocket, message: any): void {
    if (socket.readyState !== 1) {
      return;
    }
    this.received.push({ method: message.method, params: message.params });
    const reply = (result: unknown) => socket.deliver({ jsonrpc: '2.0', id: message.id, result });
    const fail = (code: number, text: string) =>
      socket.deliver({ jsonrpc: '2.0', id: message.id, error: { code, message: text } });
    const p = message.params ?? {};
    if (message.method === 'initialize') {
      if (socket.session) {
        fail(-32600, 'initialize may only be sent once per connection');
        return;
      }
      let session: ISession | undefined;
      if (p.resumeSessionId !== undefined) {
        session = this.forgetSessions ? undefined : this.sessions.get(p.resumeSessionId);
        if (!session || session.socket) {
          // As the real server: an unknown, expired or attached session is refused.
          fail(-32600, `unknown or expired session ${p.resumeSessionId}`);
          return;
        }
      } else {
        session = {
          id: `s${++this._sessionCount}`,
          socket: null,
          subscriptions: new Set(),
          watch: false,
          initialized: false,
          dropNotifications: false
        };
        this.sessions.set(session.id, session);
      }
      session.socket = socket;
      session.initialized = false;
      socket.session = session;
      reply({ sessionId: session.id, serverInfo: { name: 'jupyter-exec', version: '0' }, capabilities: {} });
      return;
    }
    if (message.method === 'initialized') {
      socket.session!.initialized = true;
      return;
    }
    const session = socket.session;
    if (!session?.initialized) {
      fail(-32600, 'client must call initialize before using process methods');
      return;
    }
    if (message.method === 'process/list') {
      session.watch = session.watch || !!p.watch;
      reply({ processes: [...this.processes.values()].map(x => ({ ...x.info, nextSeq: x.nextSeq })) });
      return;
    }
    if (message.method.startsWith('queue/')) {
      if (!this.queues) {
        fail(-32601, `method not found: ${message.method}`);
      } else if (message.method === 'queue/set') {
        const known = this.queues.get(p.name) ?? { name: p.name, parallel: 1, running: 0, queued: 0 };
        this.queues.set(p.name, { ...known, parallel: p.parallel });
        reply({});
      } else {
        reply({ queues: [...this.queues.values()].map(q => ({ ...q })) });
      }
      return;
    }
    const proc = this.processes.get(p.processId);
    if (!proc) {
      fail(-32600, `unknown process id ${p.processId}`);
      return;
    }
    switch (message.method) {
      case 'process/read': {
        const chunks = [];
        let budget = p.maxBytes ?? Infinity;
        for (const e of proc.events) {
          if (e.seq <= (p.afterSeq ?? 0) || e.kind !== 'output') {
            continue;
          }
          const size = Buffer.from(e.chunk!, 'base64').length;
          if (chunks.length && size > budget) {
            break;
          }
          budget -= size;
          chunks.push({ seq: e.seq, stream: e.stream, chunk: e.chunk });
        }
        const exited = proc.events.find(e => e.kind === 'exited');
        reply({
          chunks,
          nextSeq: chunks.length ? chunks[chunks.length - 1].seq + 1 : proc.nextSeq,
          exited: !!exited,
          exitCode: exited?.exitCode ?? null,
          signal: exited?.signal ?? null,
          closed: proc.events.some(e => e.kind === 'closed'),
          failure: null,
          firstSeq: proc.firstSeq
        });
        return;
      }
      case 'process/subscribe':
        session.subscriptions.add(p.processId);
        for (const e of proc.events.filter(x => x.kind === 'output').slice(-this.replayLimit)) {
          if (e.seq > (p.afterSeq ?? 0)) {
            this.send(session, {
              method: 'process/output',
              params: { processId: p.processId, seq: e.seq, stream: e.stream, chunk: e.chunk }
            });
          }
        }
        reply({ nextSeq: proc.nextSeq });
        return;
      case 'process/remove':
        this.remove(p.processId);
        reply({});
        return;
      case 'process/unsubscribe':
        session.subscriptions.delete(p.processId);
        reply({});
        return;
      case 'process/write':
        if (p.writeId && proc.writeIds.has(p.writeId)) {
          reply({ status: 'accepted' });
          return;
        }
        if (p.writeId) {
          proc.writeIds.add(p.writeId);
        }
        proc.stdin.push(Buffer.from(p.chunk, 'base64').toString('utf-8'));
        reply({ status: proc.info.state === 'running' ? 'accepted' : 'stdinClosed' });
        return;
      default:
        reply({});
    }
  }

  private send(session: ISession, message: object): void {
    if (session.socket && !session.dropNotifications) {
      session.socket.deliver({ jsonrpc: '2.0', ...message });
    }
  }

  private notifySubscribers(processId: string, message: object): void {
    for (const session of this.sessions.values()) {
      if (session.subscriptions.has(processId)) {
        this.send(session, message);
      }
    }
  }

  private notifyWatchers(message: object): void {
    for (const session of this.sessions.values()) {
      if (session.watch) {
        this.send(session, message);
      }
    }
  }
}
