import { ExecConnection, RpcError } from '../connection';
import { OutputEvent, ProcessListModel, ProcessStream } from '../model';
import { FakeServer, flush, text } from './fakeserver';

function setup() {
  const server = new FakeServer();
  const connection = new ExecConnection({
    url: 'ws://server/api/exec/ws',
    createSocket: server.createSocket,
    initialBackoffMs: 5,
    maxBackoffMs: 20,
    idleCloseMs: 10
  });
  return { server, connection };
}

function show(e: OutputEvent): string {
  switch (e.kind) {
    case 'output':
      return text(e.data);
    case 'dropped':
      return `[dropped ${e.fromSeq}-${e.toSeq}]`;
    case 'restarted':
      return `[restart ${e.restarts} after ${e.exitCode}]`;
  }
}

/** Collect what a view would render. */
function record(stream: ProcessStream) {
  const events: OutputEvent[] = [];
  stream.output.connect((_, e) => events.push(e));
  return {
    events,
    get text() {
      return events.map(show).join('');
    },
    get seqs() {
      return events.flatMap(e => (e.kind === 'output' ? [e.seq] : []));
    }
  };
}

/** Let the model's poll refresh the list (and the queues) at least once. */
async function pollOnce(model: ProcessListModel): Promise<void> {
  const polling = model.poll(5);
  await new Promise(resolve => setTimeout(resolve, 40));
  polling.dispose();
  await flush();
}

const lines = (from: number, to: number) =>
  Array.from({ length: to - from + 1 }, (_, i) => `line ${from + i}\n`).join('');

describe('ProcessStream', () => {
  it('replays the full history in maxBytes pages from afterSeq 0, then follows live', async () => {
    const { server, connection } = setup();
    server.addProcess('p');
    for (let i = 1; i <= 10; i++) {
      server.emit('p', `line ${i}\n`);
    }
    server.replayLimit = 2; // memory holds seq 9-10; the rest only on "disk"
    const stream = new ProcessStream(connection, 'p', { maxBytes: 20 });
    const out = record(stream);
    await flush(60);
    expect(server.calls('process/subscribe')).toEqual([{ processId: 'p', afterSeq: 0 }]);
    const reads = server.calls('process/read');
    expect(reads[0]).toEqual({ processId: 'p', afterSeq: 0, maxBytes: 20 });
    expect(reads.length).toBeGreaterThan(3); // paged
    // The reads stop where the replayed notifications take over: no read past seq 8.
    expect(Math.max(...reads.map(r => r.afterSeq))).toBeLessThan(9);
    expect(stream.caughtUp).toBe(true);

    server.emit('p', 'line 11\n', 'stderr');
    await flush();
    expect(out.text).toBe(lines(1, 11));
    expect(out.seqs).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(out.events[10]).toMatchObject({ kind: 'output', stream: 'stderr' });
    stream.dispose();
    connection.dispose();
  });

  it('does not chase a busy process one round trip at a time', async () => {
    const { server, connection } = setup();
    server.addProcess('p');
    server.emit('p', 'a');
    server.replayLimit = 0;
    // A chatty process: every read answer is preceded by fresh output.
    const handle = server.handle.bind(server);
    server.handle = (socket, message) => {
      if (message.method === 'process/read') {
        server.emit('p', 'x');
      }
      handle(socket, message);
    };
    const stream = new ProcessStream(connection, 'p');
    const out = record(stream);
    await flush(60);
    expect(stream.caughtUp).toBe(true);
    expect(server.calls('process/read').length).toBeLessThanOrEqual(2);
    expect(out.seqs).toEqual(out.seqs.map((_, i) => i + 1));
    stream.dispose();
    connection.dispose();
  });

  it('drops duplicates (a notification racing the read, a subscribe replay)', async () => {
    const { server, connection } = setup();
    server.addProcess('p');
    server.emit('p', 'a');
    const stream = new ProcessStream(connection, 'p');
    const out = record(stream);
    await flush();
    // Re-send old notifications verbatim, as a replay overlapping the read would.
    const socket = server.openSockets[0];
    const old = { processId: 'p', seq: 1, stream: 'stdout', chunk: Buffer.from('a').toString('base64') };
    socket.deliver({ method: 'process/output', params: old });
    server.emit('p', 'b');
    socket.deliver({ method: 'process/output', params: old });
    await flush();
    expect(out.text).toBe('ab');
    stream.dispose();
    connection.dispose();
  });

  it('recovers a gap in seq (notifications dropped for a slow client) with process/read', async () => {
    const { server, connection } = setup();
    server.addProcess('p');
    const stream = new ProcessStream(connection, 'p');
    const out = record(stream);
    await flush();
    server.emit('p', 'line 1\n');
    await flush();
    const session = [...server.sessions.values()][0];
    session.dropNotifications = true;
    server.emit('p', 'line 2\n');
    server.emit('p', 'line 3\n');
    session.dropNotifications = false;
    const readsBefore = server.calls('process/read').length;
    server.emit('p', 'line 4\n'); // seq 4 after cursor 1: a gap
    await flush();
    expect(server.calls('process/read').slice(readsBefore)[0]).toMatchObject({ afterSeq: 1 });
    server.emit('p', 'line 5\n');
    await flush();
    expect(out.text).toBe(lines(1, 5));
    expect(out.seqs).toEqual([1, 2, 3, 4, 5]);
    stream.dispose();
    connection.dispose();
  });

  it('resumes after a disconnect from its cursor: nothing lost, nothing twice', async () => {
    const { server, connection } = setup();
    server.addProcess('p');
    server.emit('p', lines(1, 1));
    const stream = new ProcessStream(connection, 'p');
    const out = record(stream);
    await flush();
    server.disconnectAll();
    await flush(1);
    server.emit('p', lines(2, 2)); // produced while we were away
    server.emit('p', lines(3, 3));
    await flush(60);
    expect(connection.status).toBe('connected');
    const inits = server.calls('initialize');
    expect(inits[1]).toEqual({ clientName: 'jupyterlab', resumeSessionId: 's1' });
    expect(server.calls('process/read').at(-2)).toMatchObject({ afterSeq: 1 });
    // The resumed session kept the subscription: no second subscribe.
    expect(server.calls('process/subscribe')).toHaveLength(1);
    server.emit('p', lines(4, 4));
    await flush();
    expect(out.text).toBe(lines(1, 4));
    stream.dispose();
    connection.dispose();
  });

  it('re-subscribes when the server restarted and forgot the session', async () => {
    const { server, connection } = setup();
    server.addProcess('p');
    const stream = new ProcessStream(connection, 'p');
    const out = record(stream);
    await flush();
    server.emit('p', 'x');
    await flush();
    server.forgetSessions = true;
    server.disconnectAll();
    await flush(1);
    server.emit('p', 'y');
    await flush(60);
    expect(server.calls('process/subscribe')).toEqual([
      { processId: 'p', afterSeq: 0 },
      { processId: 'p', afterSeq: 1 }
    ]);
    server.emit('p', 'z');
    await flush();
    expect(out.text).toBe('xyz');
    stream.dispose();
    connection.dispose();
  });

  it('puts a restart between the runs it separates, live and after a gap, once', async () => {
    const { server, connection } = setup();
    server.addProcess('w');
    const stream = new ProcessStream(connection, 'w');
    const out = record(stream);
    await flush();
    server.emit('w', 'run 1\n');
    server.restart('w', 1, 1);
    server.emit('w', 'run 2\n');
    await flush();
    // Dropped for a slow client: the read fills the output, the restart seq is stepped over.
    const session = [...server.sessions.values()][0] as any;
    session.dropNotifications = true;
    server.restart('w', 2, 1);
    session.dropNotifications = false;
    server.emit('w', 'run 3\n');
    await flush(60);
    expect(out.text).toBe('run 1\n[restart 1 after 1]run 2\nrun 3\n');
    expect(stream.cursor).toBe(5);
    expect(stream.exited).toBe(false);
    stream.dispose();
    connection.dispose();
  });

  it('treats exited and closed as seq markers and reports the exit', async () => {
    const { server, connection } = setup();
    server.addProcess('p');
    const stream = new ProcessStream(connection, 'p');
    const out = record(stream);
    await flush();
    server.emit('p', 'bye\n');
    server.exit('p', 143, 'SIGTERM');
    await flush();
    expect(stream.exited).toBe(true);
    expect(stream.closed).toBe(true);
    expect(stream.exitCode).toBe(143);
    expect(stream.signal).toBe('SIGTERM');
    expect(stream.cursor).toBe(3);
    const reads = server.calls('process/read').length;
    await flush();
    expect(server.calls('process/read')).toHaveLength(reads); // no spurious gap reads
    expect(out.text).toBe('bye\n');

    // A new view of the exited process: history, then the exit from the read.
    const again = new ProcessStream(connection, 'p');
    const out2 = record(again);
    await flush();
    expect(out2.text).toBe('bye\n');
    expect(again.exitCode).toBe(143);
    expect(again.cursor).toBe(3);
    expect(again.closed).toBe(true);
    stream.dispose();
    again.dispose();
    connection.dispose();
  });

  it('marks output lost to the retention limit, once, in place', async () => {
    const { server, connection } = setup();
    server.addProcess('p');
    for (let i = 1; i <= 5; i++) {
      server.emit('p', `line ${i}\n`);
    }
    server.forget('p', 3);
    const stream = new ProcessStream(connection, 'p');
    const out = record(stream);
    await flush();
    expect(out.text).toBe(`[dropped 1-3]${lines(4, 5)}`);
    stream.dispose();
    connection.dispose();
  });

  it('reports an unknown process instead of retrying forever', async () => {
    const { connection } = setup();
    const stream = new ProcessStream(connection, 'gone');
    await flush();
    expect(stream.error).toBe('unknown process id gone');
    stream.dispose();
    connection.dispose();
  });

  it('writes in order, merges queued input, and retries after a drop without doubling', async () => {
    const { server, connection } = setup();
    const proc = server.addProcess('p', true);
    const stream = new ProcessStream(connection, 'p');
    await flush();
    stream.write('a');
    stream.write('b');
    stream.write('c');
    await flush();
    expect(proc.stdin.join('')).toBe('abc');
    expect(server.calls('process/write')).toHaveLength(2); // 'a', then 'bc' merged

    // Lose the socket right after the server took a write but before its answer.
    stream.write('d');
    const socket = server.openSockets[0];
    const deliver = socket.deliver.bind(socket);
    socket.deliver = (m: any) => (m.id !== undefined && m.result?.status ? server.disconnectAll() : deliver(m));
    await flush(60);
    expect(connection.status).toBe('connected');
    const writes = server.calls('process/write');
    expect(writes.at(-1).writeId).toBe(writes.at(-2).writeId); // retried with the same id
    expect(proc.stdin.join('')).toBe('abcd'); // and written once
    stream.dispose();
    connection.dispose();
  });

  it('unsubscribes and releases the connection when disposed', async () => {
    const { server, connection } = setup();
    server.addProcess('p');
    const stream = new ProcessStream(connection, 'p');
    await flush();
    stream.dispose();
    await flush();
    expect(server.calls('process/unsubscribe')).toEqual([{ processId: 'p' }]);
    await new Promise(resolve => setTimeout(resolve, 30));
    expect(connection.status).toBe('idle');
    connection.dispose();
  });
});

describe('ProcessStream at the end of an ended process', () => {
  it('is at its end only after the last output, when the replay races the reads', async () => {
    const { server, connection } = setup();
    server.addProcess('p');
    for (let i = 1; i <= 30; i++) {
      server.emit('p', `line ${i}\n`);
    }
    server.exit('p', 0);
    const handle = server.handle.bind(server);
    server.handle = (socket, message) => {
      if (message.method === 'process/read') {
        setTimeout(() => handle(socket, message), 5); // reads slower than the replay
        return;
      }
      if (message.method !== 'process/subscribe') {
        handle(socket, message);
        return;
      }
      // As the real server: the response first, then the whole output from afterSeq as
      // notifications, slower than the reads here, so that reads and replay overlap.
      socket.deliver({ jsonrpc: '2.0', id: message.id, result: { nextSeq: 33 } });
      server.processes.get('p')!.events.forEach((e, i) => {
        const params =
          e.kind === 'output'
            ? { processId: 'p', seq: e.seq, stream: e.stream, chunk: e.chunk }
            : { processId: 'p', seq: e.seq, exitCode: 0, signal: null };
        setTimeout(() => socket.deliver({ jsonrpc: '2.0', method: `process/${e.kind}`, params }), 3 * i);
      });
    };
    const stream = new ProcessStream(connection, 'p', { maxBytes: 20 });
    const out = record(stream);
    let linesAtEnd: number | null = null;
    let exitedBeforeTheEnd = false;
    stream.changed.connect(() => {
      if (stream.atEnd && linesAtEnd === null) {
        linesAtEnd = out.seqs.length;
      }
      exitedBeforeTheEnd ||= stream.exited && stream.caughtUp && out.seqs.length < 30;
    });
    await flush(200);
    await new Promise(resolve => setTimeout(resolve, 100));
    expect(out.text).toBe(lines(1, 30));
    expect(linesAtEnd).toBe(30);
    // Nor does it say "caught up" with an exit before the last line (reads stopping at
    // stale chunks did: a view then wrote "[process exited]" amid the replay).
    expect(exitedBeforeTheEnd).toBe(false);
    stream.dispose();
    connection.dispose();
  });
});

describe('ProcessListModel', () => {
  it('lists, then follows started / exited / closed / removed', async () => {
    const { server, connection } = setup();
    server.addProcess('old');
    const model = new ProcessListModel(connection);
    let changes = 0;
    model.changed.connect(() => changes++);
    const handle = model.watch();
    await flush();
    expect(model.loaded).toBe(true);
    expect(server.calls('process/list')).toEqual([{ watch: true }]);
    expect(model.processes.map(p => p.processId)).toEqual(['old']);

    server.addProcess('new');
    await flush();
    expect(model.processes.map(p => p.processId).sort()).toEqual(['new', 'old']);
    server.exit('new', 0);
    await flush();
    expect(model.get('new')).toMatchObject({ state: 'closed', exitCode: 0 });
    expect(model.get('new')!.exitedAt).not.toBeNull();
    server.remove('old');
    await flush();
    expect(model.processes.map(p => p.processId)).toEqual(['new']);
    expect(changes).toBeGreaterThanOrEqual(4);
    handle.dispose();
    model.dispose();
    connection.dispose();
  });

  it('refreshes after a reconnect (what happened while away shows up)', async () => {
    const { server, connection } = setup();
    const model = new ProcessListModel(connection);
    const handle = model.watch();
    await flush();
    server.forgetSessions = true;
    server.disconnectAll();
    await flush(1);
    server.addProcess('while-away');
    await flush(60);
    expect(model.get('while-away')).toBeDefined();
    expect(server.calls('process/list')).toHaveLength(2);
    handle.dispose();
    model.dispose();
    connection.dispose();
  });

  it('never moves a process backwards when a stale notification arrives', async () => {
    const { server, connection } = setup();
    const model = new ProcessListModel(connection);
    const handle = model.watch();
    await flush();
    const proc = server.addProcess('p');
    await flush();
    server.exit('p', 1);
    await flush();
    // A late, stale "started" for the same process.
    server.openSockets[0].deliver({ method: 'process/started', params: { process: { ...proc.info, state: 'running' } } });
    await flush();
    expect(model.get('p')!.state).toBe('closed');
    handle.dispose();
    model.dispose();
    connection.dispose();
  });
});

describe('module boundaries', () => {
  it('keeps protocol, connection and model free of DOM and JupyterLab imports', () => {
    const fs = require('fs');
    const path = require('path');
    for (const name of ['protocol.ts', 'connection.ts', 'model.ts']) {
      const source: string = fs.readFileSync(path.join(__dirname, '..', name), 'utf-8');
      const imports = [...source.matchAll(/from '([^']+)'/g)].map(m => m[1]);
      for (const spec of imports) {
        expect(spec).toMatch(/^(\.\/|@lumino\/(signaling|disposable)$)/);
      }
      expect(source).not.toMatch(/\b(document|window)\./);
    }
  });
});

describe('ProcessListModel for the panel (SPEC 11)', () => {
  it('polls the list while someone shows usage, and stops when the last one goes', async () => {
    const { server, connection } = setup();
    const proc = server.addProcess('busy');
    const model = new ProcessListModel(connection);
    const first = model.poll(30);
    const second = model.poll(30);
    await flush();
    const usage = { cpuPercent: 99, cpuSeconds: 3, rssBytes: 2e8, peakRssBytes: 2e8, processes: 4 };
    proc.info.usage = usage;
    proc.info.ports = [{ port: 8000, address: '127.0.0.1', pid: 100, url: '/proxy/8000/' }];
    await new Promise(resolve => setTimeout(resolve, 80));
    await flush();
    expect(model.get('busy')).toMatchObject({ usage, ports: proc.info.ports });
    first.dispose();
    first.dispose(); // twice is once
    const polled = server.calls('process/list').length;
    await new Promise(resolve => setTimeout(resolve, 80));
    expect(server.calls('process/list').length).toBeGreaterThan(polled); // the second holder still polls
    second.dispose();
    await flush();
    const stopped = server.calls('process/list').length;
    await new Promise(resolve => setTimeout(resolve, 80));
    expect(server.calls('process/list').length).toBe(stopped);
    model.dispose();
    connection.dispose();
  });

  it('counts active processes and removes finished ones, reporting the ids it could not', async () => {
    const { server, connection } = setup();
    for (const id of ['a', 'b', 'c', 'd']) {
      server.addProcess(id);
    }
    const model = new ProcessListModel(connection);
    const handle = model.watch();
    await flush();
    server.exit('b', 0);
    server.exit('c', 1);
    await flush();
    expect(model.activeCount).toBe(2);
    const failed = await model.removeAll(['b', 'c', 'no-such'], 2);
    await flush();
    expect(failed).toEqual(['no-such']);
    expect(model.processes.map(p => p.processId).sort()).toEqual(['a', 'd']);
    expect(server.calls('process/remove').map(p => p.processId).sort()).toEqual(['b', 'c', 'no-such']);
    expect(model.activeCount).toBe(2);
    handle.dispose();
    model.dispose();
    connection.dispose();
  });

  it('removes one process through process/remove, and rejects with the reason for an unknown one', async () => {
    const { server, connection } = setup();
    server.addProcess('a');
    const model = new ProcessListModel(connection);
    const handle = model.watch();
    await flush();
    server.exit('a', 0);
    await model.remove('a');
    expect(model.get('a')).toBeUndefined();
    expect(server.calls('process/remove')).toEqual([{ processId: 'a' }]);
    await expect(model.remove('a')).rejects.toThrow(new RpcError(-32600, 'unknown process id a'));
    handle.dispose();
    model.dispose();
    connection.dispose();
  });

  it('never moves a lost process back to running on a notification that was in flight', async () => {
    const { server, connection } = setup();
    server.addProcess('p').info.state = 'lost';
    // A process/started sent before the daemon died reaches us while the list is on its way.
    const handle = server.handle.bind(server);
    server.handle = (socket, message) => {
      if (message.method === 'process/list') {
        const stale = { ...server.processes.get('p')!.info, state: 'running' };
        socket.deliver({ jsonrpc: '2.0', method: 'process/started', params: { process: stale } });
      }
      handle(socket, message);
    };
    const model = new ProcessListModel(connection);
    const watch = model.watch();
    await flush();
    expect(model.get('p')?.state).toBe('lost');
    expect(model.activeCount).toBe(0);
    watch.dispose();
    model.dispose();
    connection.dispose();
  });

  it('keeps a restarted process running with its new pid, never moving a closed one back', async () => {
    const { server, connection } = setup();
    server.addProcess('svc');
    const model = new ProcessListModel(connection);
    const handle = model.watch();
    await flush();
    const session = [...server.sessions.values()][0] as any;
    const send = (params: object) =>
      session.socket.deliver({ jsonrpc: '2.0', method: 'process/restarted', params: { processId: 'svc', ...params } });
    send({ seq: 3, restarts: 1, pid: 222, exitCode: 1, signal: null });
    await flush();
    expect(model.get('svc')).toMatchObject({ state: 'running', pid: 222, restarts: 1 });
    server.exit('svc', 0);
    await flush();
    send({ seq: 9, restarts: 2, pid: 333, exitCode: 1, signal: null });
    await flush();
    expect(model.get('svc')).toMatchObject({ state: 'closed', exitCode: 0 });
    handle.dispose();
    model.dispose();
    connection.dispose();
  });

  it('moves a process from queued to running and through restarts, never back to queued', async () => {
    const { server, connection } = setup();
    const proc = server.addProcess('q');
    Object.assign(proc.info, { state: 'queued', pid: null, queue: 'gpu' });
    const model = new ProcessListModel(connection);
    const handle = model.watch();
    await flush();
    expect(model.get('q')).toMatchObject({ state: 'queued', pid: null });
    const session = [...server.sessions.values()][0] as any;
    const started = (patch: object) =>
      session.socket.deliver({
        jsonrpc: '2.0',
        method: 'process/started',
        params: { process: { ...proc.info, ...patch } }
      });
    started({ state: 'running', pid: 77 });
    await flush();
    started({ state: 'queued', pid: null }); // a late copy of the first announcement
    await flush();
    expect(model.get('q')).toMatchObject({ state: 'running', pid: 77 });
    expect(model.activeCount).toBe(1);
    // A poll between two runs lists it restarting; the restart brings it back to running.
    Object.assign(proc.info, { state: 'restarting', pid: null, restarts: 0 });
    await pollOnce(model);
    expect(model.get('q')).toMatchObject({ state: 'restarting', pid: null });
    expect(model.activeCount).toBe(1);
    session.socket.deliver({
      jsonrpc: '2.0',
      method: 'process/restarted',
      params: { processId: 'q', seq: 4, restarts: 1, pid: 78, exitCode: 1, signal: null }
    });
    await flush();
    expect(model.get('q')).toMatchObject({ state: 'running', pid: 78, restarts: 1 });
    handle.dispose();
    model.dispose();
    connection.dispose();
  });

  it("lists the queues with each list, sets a queue's parallelism, and follows its counts", async () => {
    const { server, connection } = setup();
    server.queues!.set('gpu', { name: 'gpu', parallel: 1, running: 1, queued: 2 });
    server.queues!.set('cpu', { name: 'cpu', parallel: 4, running: 0, queued: 0 });
    const model = new ProcessListModel(connection);
    const handle = model.watch();
    await flush();
    expect(model.queues.map(q => [q.name, q.parallel, q.running, q.queued])).toEqual([
      ['cpu', 4, 0, 0],
      ['gpu', 1, 1, 2]
    ]);
    await model.setQueue('gpu', 2);
    expect(server.calls('queue/set')).toEqual([{ name: 'gpu', parallel: 2 }]);
    expect(model.queues[1]).toMatchObject({ name: 'gpu', parallel: 2 });
    // A queued process starting is a notification: the counts follow without a poll.
    const listed = server.calls('queue/list').length;
    server.queues!.set('gpu', { name: 'gpu', parallel: 2, running: 2, queued: 1 });
    const proc = server.addProcess('b');
    Object.assign(proc.info, { queue: 'gpu' });
    const session = [...server.sessions.values()][0] as any;
    session.socket.deliver({ jsonrpc: '2.0', method: 'process/started', params: { process: { ...proc.info } } });
    await flush();
    expect(server.calls('queue/list').length).toBeGreaterThan(listed);
    expect(model.queues[1]).toMatchObject({ running: 2, queued: 1 });
    handle.dispose();
    model.dispose();
    connection.dispose();
  });

  it('does without queues on a server that has none, asking only once', async () => {
    const { server, connection } = setup();
    server.queues = null;
    server.addProcess('a');
    const model = new ProcessListModel(connection);
    const handle = model.watch();
    await flush();
    await pollOnce(model);
    expect(model.queues).toEqual([]);
    expect(model.get('a')?.state).toBe('running');
    expect(server.calls('queue/list').length).toBe(1);
    await expect(model.setQueue('gpu', 2)).rejects.toThrow('method not found: queue/set');
    handle.dispose();
    model.dispose();
    connection.dispose();
  });

  it('learns why a process never ran before it shows as ended (failure is only in the list)', async () => {
    const { server, connection } = setup();
    server.addProcess('t');
    const proc = server.addProcess('e');
    Object.assign(proc.info, { state: 'queued', pid: null, after: ['t'] });
    const model = new ProcessListModel(connection);
    const handle = model.watch();
    await flush();
    const seen: (string | null | undefined)[] = [];
    model.changed.connect(() => {
      const e = model.get('e');
      if (e && e.state !== 'queued') {
        seen.push(e.failure);
      }
    });
    server.exit('t', 1);
    proc.info.failure = 'dependency t failed: exited 1';
    server.exit('e', null);
    await flush();
    expect(model.get('e')).toMatchObject({ state: 'closed', exitCode: null, failure: 'dependency t failed: exited 1' });
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every(f => f === 'dependency t failed: exited 1')).toBe(true);
    handle.dispose();
    model.dispose();
    connection.dispose();
  });
});
