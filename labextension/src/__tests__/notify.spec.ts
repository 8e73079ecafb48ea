import { ExecConnection } from '../connection';
import { ProcessListModel } from '../model';
import { ExitNotifier, INotifySettings, IStorageLike, STORAGE_KEY } from '../notify';
import { IProcessInfo } from '../protocol';
import { FakeServer, flush } from './fakeserver';

/** localStorage as a Map: shared by the "tabs" of one test. */
class MemoryStorage implements IStorageLike {
  items = new Map<string, string>();
  getItem(key: string): string | null {
    return this.items.get(key) ?? null;
  }
  setItem(key: string, value: string): void {
    this.items.set(key, value);
  }
}

/** One browser tab: a connection, a watched list, a notifier that records what it announced. */
function tab(server: FakeServer, storage: IStorageLike, settings?: INotifySettings) {
  const connection = new ExecConnection({ url: 'ws://server/api/exec/ws', createSocket: server.createSocket });
  const list = new ProcessListModel(connection);
  const announced: string[][] = [];
  const notifier = new ExitNotifier({
    list,
    storage,
    settings,
    announce: (ps: IProcessInfo[]) => announced.push(ps.map(p => p.processId))
  });
  const handle = list.watch();
  return {
    notifier,
    announced,
    close() {
      notifier.dispose();
      handle.dispose();
      list.dispose();
      connection.dispose();
    }
  };
}

describe('ExitNotifier', () => {
  it('announces, by default, the ends of the processes this browser started, once', async () => {
    const server = new FakeServer();
    const storage = new MemoryStorage();
    const a = tab(server, storage);
    await flush();
    a.notifier.markStarted('mine');
    server.addProcess('mine');
    server.addProcess('theirs');
    await flush();
    server.exit('theirs', 0);
    server.exit('mine', 3);
    await flush();
    expect(a.announced).toEqual([['mine']]);
    // exited then closed, and every later list refresh: still once.
    server.addProcess('other');
    await flush();
    expect(a.announced).toEqual([['mine']]);
    // A second tab (or a reload) sees the same list: nothing new to say.
    const b = tab(server, storage);
    await flush();
    expect(b.announced).toEqual([]);
    a.close();
    b.close();
  });

  it('announces at the next open what ended while no browser was open, once', async () => {
    const server = new FakeServer();
    const storage = new MemoryStorage();
    const first = tab(server, storage);
    await flush();
    first.notifier.markStarted('job');
    server.addProcess('job');
    server.addProcess('unseen-other');
    await flush();
    first.close(); // the browser goes away
    await flush();
    server.exit('job', 0);
    server.exit('unseen-other', 1);
    const next = tab(server, storage);
    await flush();
    expect(next.announced).toEqual([['job']]);
    next.close();
    const again = tab(server, storage);
    await flush();
    expect(again.announced).toEqual([]);
    again.close();
  });

  it('does not flood a first visit with ends from before it', async () => {
    const server = new FakeServer();
    server.addProcess('old');
    server.exit('old', 1);
    const storage = new MemoryStorage();
    const t = tab(server, storage, { scope: 'all', onlyFailures: false });
    await flush();
    expect(t.announced).toEqual([]);
    server.addProcess('new');
    await flush();
    server.exit('new', 0);
    await flush();
    expect(t.announced).toEqual([['new']]);
    t.close();
  });

  it('covers every process, or only failures, or none, as the settings say', async () => {
    const server = new FakeServer();
    const storage = new MemoryStorage();
    const t = tab(server, storage, { scope: 'all', onlyFailures: true });
    await flush();
    for (const id of ['ok', 'bad', 'killed', 'late-ok', 'late-bad']) {
      server.addProcess(id);
    }
    await flush();
    server.exit('ok', 0);
    server.exit('bad', 2);
    server.exit('killed', 143, 'SIGTERM');
    await flush();
    expect(t.announced.flat()).toEqual(['bad', 'killed']);
    t.notifier.settings = { scope: 'off', onlyFailures: false };
    server.exit('late-bad', 1);
    await flush();
    t.notifier.settings = { scope: 'all', onlyFailures: false };
    server.exit('late-ok', 0);
    await flush();
    expect(t.announced.flat()).toEqual(['bad', 'killed', 'late-ok']);
    t.close();
  });

  it('tells a reused id apart from the earlier process of that id', async () => {
    const server = new FakeServer();
    const storage = new MemoryStorage();
    const t = tab(server, storage, { scope: 'all', onlyFailures: false });
    await flush();
    server.addProcess('build');
    await flush();
    server.exit('build', 0);
    await flush();
    server.remove('build');
    await flush();
    await new Promise(resolve => setTimeout(resolve, 5)); // a later start of the same id
    server.addProcess('build');
    await flush();
    server.exit('build', 1);
    await flush();
    expect(t.announced).toEqual([['build'], ['build']]);
    t.close();
  });

  it('forgets processes that left the registry, and survives unreadable storage', async () => {
    const server = new FakeServer();
    const storage = new MemoryStorage();
    storage.setItem(STORAGE_KEY, JSON.stringify({ since: 0, seen: ['gone@1', 'gone@2'], mine: ['x'] }));
    const t = tab(server, storage);
    await flush();
    expect(JSON.parse(storage.getItem(STORAGE_KEY)!)).toEqual({ since: 0, seen: [], mine: ['x'] });
    t.close();
    storage.setItem(STORAGE_KEY, '{not json');
    const u = tab(server, storage);
    await flush();
    u.notifier.markStarted('y');
    expect(JSON.parse(storage.getItem(STORAGE_KEY)!).mine).toEqual(['y']);
    u.close();
  });
});
