import { ConnectionLostError, ExecConnection, IConnectedArgs, RpcError } from '../connection';
import { FakeServer, flush } from './fakeserver';

function connect(server: FakeServer, options: Partial<ConstructorParameters<typeof ExecConnection>[0]> = {}) {
  const connection = new ExecConnection({
    url: 'ws://server/api/exec/ws?token=t',
    createSocket: server.createSocket,
    initialBackoffMs: 5,
    maxBackoffMs: 40,
    idleCloseMs: 20,
    ...options
  });
  const events: IConnectedArgs[] = [];
  connection.connected.connect((_, args) => events.push(args));
  return { connection, events };
}

describe('ExecConnection', () => {
  afterEach(() => jest.restoreAllMocks());

  it('does nothing until acquired, then shakes hands as SPEC 2 says', async () => {
    const server = new FakeServer();
    const { connection, events } = connect(server);
    await flush();
    expect(server.sockets).toHaveLength(0);
    expect(connection.status).toBe('idle');
    await expect(connection.request('process/list', {})).rejects.toBeInstanceOf(ConnectionLostError);

    const handle = connection.acquire();
    await flush();
    expect(connection.status).toBe('connected');
    expect(server.sockets[0].sent.map(m => m.method)).toEqual(['initialize', 'initialized']);
    expect(server.sockets[0].sent[0].params).toEqual({ clientName: 'jupyterlab' });
    expect(server.sockets[0].sent[1].id).toBeUndefined();
    expect(events).toEqual([{ sessionId: 's1', resumed: false }]);
    handle.dispose();
    connection.dispose();
  });

  it('turns error answers into RpcError', async () => {
    const server = new FakeServer();
    const { connection } = connect(server);
    const handle = connection.acquire();
    await flush();
    const error = await connection.request('process/read', { processId: 'nope' }).catch(e => e);
    expect(error).toBeInstanceOf(RpcError);
    expect(error.code).toBe(-32600);
    expect(error.message).toBe('unknown process id nope');
    handle.dispose();
    connection.dispose();
  });

  it('reconnects after a drop and resumes its session', async () => {
    const server = new FakeServer();
    const { connection, events } = connect(server);
    const handle = connection.acquire();
    await flush();
    const pending = connection.request('process/list', { watch: true });
    server.disconnectAll();
    await expect(pending).rejects.toBeInstanceOf(ConnectionLostError);
    expect(connection.status).toBe('disconnected');
    await flush(40);
    expect(connection.status).toBe('connected');
    expect(server.sockets).toHaveLength(2);
    expect(server.sockets[1].sent[0].params).toEqual({ clientName: 'jupyterlab', resumeSessionId: 's1' });
    expect(events).toEqual([
      { sessionId: 's1', resumed: false },
      { sessionId: 's1', resumed: true }
    ]);
    handle.dispose();
    connection.dispose();
  });

  it('reports a fresh session when the server forgot the old one (restart)', async () => {
    const server = new FakeServer();
    const { connection, events } = connect(server);
    const handle = connection.acquire();
    await flush();
    server.forgetSessions = true;
    server.disconnectAll();
    await flush(40);
    expect(events[1]).toEqual({ sessionId: 's2', resumed: false });
    // Refused resume, then a fresh initialize on the same socket: no reconnect needed.
    expect(server.sockets).toHaveLength(2);
    expect(server.sockets[1].sent.map(m => [m.method, m.params?.resumeSessionId])).toEqual([
      ['initialize', 's1'],
      ['initialize', undefined],
      ['initialized', undefined]
    ]);
    handle.dispose();
    connection.dispose();
  });

  it('backs off exponentially while the server is down, then recovers', async () => {
    jest.spyOn(Math, 'random').mockReturnValue(0.5); // no jitter
    const server = new FakeServer();
    const { connection } = connect(server, { initialBackoffMs: 10, maxBackoffMs: 40 });
    const delays: number[] = [];
    connection.statusChanged.connect(() => {
      const wait = connection.retryInMs;
      if (wait !== null && connection.status === 'disconnected') {
        delays.push(wait);
      }
    });
    server.down = true;
    const handle = connection.acquire();
    await new Promise(resolve => setTimeout(resolve, 150));
    expect(connection.status).not.toBe('connected');
    const rounded = delays.map(d => Math.round(d / 10) * 10);
    expect(rounded.slice(0, 4)).toEqual([10, 20, 40, 40]);
    server.down = false;
    await new Promise(resolve => setTimeout(resolve, 80));
    expect(connection.status).toBe('connected');
    handle.dispose();
    connection.dispose();
  });

  it('gives up the socket and backs off when initialize itself fails', async () => {
    const server = new FakeServer();
    const { connection } = connect(server);
    const handle = server.handle.bind(server);
    let refusals = 2;
    server.handle = (socket, message) => {
      if (message.method === 'initialize' && refusals-- > 0) {
        socket.deliver({ jsonrpc: '2.0', id: message.id, error: { code: -32603, message: 'busy' } });
        return;
      }
      handle(socket, message);
    };
    const h = connection.acquire();
    await flush(60);
    expect(connection.status).toBe('connected');
    expect(server.sockets).toHaveLength(3);
    h.dispose();
    connection.dispose();
  });

  it('closes when the last user leaves, and reopens on the next', async () => {
    const server = new FakeServer();
    const { connection } = connect(server);
    const a = connection.acquire();
    const b = connection.acquire();
    await flush();
    a.dispose();
    a.dispose(); // idempotent
    await new Promise(resolve => setTimeout(resolve, 40));
    expect(connection.status).toBe('connected');
    b.dispose();
    await new Promise(resolve => setTimeout(resolve, 40));
    expect(connection.status).toBe('idle');
    expect(server.openSockets).toHaveLength(0);
    const c = connection.acquire();
    await flush();
    expect(connection.status).toBe('connected');
    // Nobody was listening, so the new socket does not try to resume.
    expect(server.sockets[1].sent[0].params).toEqual({ clientName: 'jupyterlab' });
    c.dispose();
    connection.dispose();
  });

  it('emits notifications and ignores garbage frames', async () => {
    const server = new FakeServer();
    const { connection } = connect(server);
    const seen: string[] = [];
    connection.notification.connect((_, n) => seen.push(n.method));
    const handle = connection.acquire();
    await flush();
    await connection.request('process/list', { watch: true });
    server.sockets[0].onmessage?.({ data: 'not json' });
    server.sockets[0].onmessage?.({ data: 'null' });
    server.addProcess('p1');
    await flush();
    expect(seen).toEqual(['process/started']);
    handle.dispose();
    connection.dispose();
  });
});
