import {
  activitySummary,
  compareOrigins,
  describeExit,
  describeQueue,
  describeRestart,
  describeSandbox,
  displayCommand,
  exitBadge,
  exitMessage,
  formatBytes,
  formatCpuSeconds,
  formatDuration,
  formatPercent,
  isFailure,
  logCut,
  nextRunIn,
  originLabel,
  portLinks,
  restartCount,
  runtimeMs,
  shownState,
  usageDetails,
  usageSummary,
  waitingFor
} from '../format';
import { AGENT, CLI, info, NOTEBOOK, T0 } from './fixtures';

const usage = { cpuPercent: 12.34, cpuSeconds: 4.25, rssBytes: 340e6, peakRssBytes: 412e6, processes: 3 };

describe('durations, sizes and percentages', () => {
  it('formats durations as m:ss and h:mm:ss', () => {
    expect(formatDuration(0)).toBe('0:00');
    expect(formatDuration(83_999)).toBe('1:23');
    expect(formatDuration(3_723_000)).toBe('1:02:03');
    expect(formatDuration(-5)).toBe('0:00');
  });

  it('formats byte sizes in decimal units with at most one decimal', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(999)).toBe('999 B');
    expect(formatBytes(1500)).toBe('1.5 KB');
    expect(formatBytes(340e6)).toBe('340 MB');
    expect(formatBytes(14.2e9)).toBe('14 GB');
    expect(formatBytes(1.25e9)).toBe('1.3 GB');
    expect(formatBytes(999_999)).toBe('1.0 MB');
  });

  it('formats CPU percent and CPU seconds', () => {
    expect(formatPercent(0)).toBe('0.0 %');
    expect(formatPercent(7.45)).toBe('7.5 %');
    expect(formatPercent(230.4)).toBe('230 %');
    expect(formatCpuSeconds(0.42)).toBe('0.4 s');
    expect(formatCpuSeconds(12.3)).toBe('12 s');
    expect(formatCpuSeconds(205)).toBe('3:25');
  });
});

describe('exit badges', () => {
  it('says running, queued, or how it ended, with the colour of each', () => {
    expect(exitBadge(info('a'))).toEqual({ text: 'running', state: 'running' });
    expect(exitBadge(info('a', { state: 'restarting' }))).toEqual({ text: 'restarting', state: 'running' });
    expect(exitBadge(info('a', { state: 'queued', pid: null }))).toEqual({ text: 'queued', state: 'queued' });
    expect(exitBadge(info('a', { state: 'closed', exitCode: 0 }))).toEqual({ text: 'exited 0', state: 'ok' });
    expect(exitBadge(info('a', { state: 'exited', exitCode: 2 }))).toEqual({ text: 'exited 2', state: 'failed' });
    expect(exitBadge(info('a', { state: 'closed', exitCode: 143, signal: 'SIGTERM' }))).toEqual({
      text: 'killed by SIGTERM (143)',
      state: 'signal'
    });
    expect(exitBadge(info('a', { state: 'lost' }))).toEqual({ text: 'lost', state: 'failed' });
    expect(describeExit(null, null)).toBe('exited');
  });

  it("shows in a view the list's state, or the exit its own stream saw first", () => {
    const exit = { exited: true, exitCode: 1, signal: null };
    const running = { exited: false, exitCode: null, signal: null };
    expect(exitBadge(shownState(info('a'), exit))).toEqual({ text: 'exited 1', state: 'failed' });
    expect(exitBadge(shownState(info('a', { state: 'lost' }), running))).toEqual({ text: 'lost', state: 'failed' });
    expect(exitBadge(shownState(info('a', { state: 'queued', pid: null }), null)).text).toBe('queued');
    expect(exitBadge(shownState(undefined, null)).text).toBe('running');
    const never = info('b', { state: 'closed', exitCode: null, pid: null, failure: 'dependency a exited 1' });
    expect(exitBadge(never)).toEqual({ text: 'not started', state: 'failed' });
    expect(exitBadge(shownState(never, { exited: true, exitCode: null, signal: null })).text).toBe('not started');
    expect(exitBadge(info('c', { state: 'closed', exitCode: 1, failure: 'x' })).text).toBe('exited 1');
  });

  it('counts a process that never started (a failed dependency) as a failure', () => {
    expect(isFailure(info('a', { state: 'closed', exitCode: null, pid: null }))).toBe(true);
    expect(isFailure(info('a', { state: 'closed', exitCode: 0 }))).toBe(false);
    expect(isFailure(info('a'))).toBe(false);
  });

  it('puts name, exit and runtime into a notification sentence', () => {
    const done = info('a', { label: 'train', state: 'closed', exitCode: 0, exitedAt: T0 + 83_000 });
    expect(exitMessage(done)).toBe('"train" exited 0 after 1:23');
    const killed = { ...done, label: null, exitCode: 137, signal: 'SIGKILL' };
    expect(exitMessage(killed)).toBe('"a" killed by SIGKILL (137) after 1:23');
    const never = info('b', { state: 'closed', exitCode: null, exitedAt: null, label: 'x'.repeat(80) });
    expect(exitMessage(never)).toBe(`"${'x'.repeat(57)}..." ended`);
    const blocked = { ...never, label: 'eval', exitedAt: T0 + 5000, failure: 'dependency train exited 1' };
    expect(exitMessage(blocked)).toBe('"eval" did not start: dependency train exited 1');
  });

  it('measures the runtime to now while it runs, to the exit after', () => {
    expect(runtimeMs(info('a'), T0 + 5000)).toBe(5000);
    expect(runtimeMs(info('a', { state: 'closed', exitedAt: T0 + 2000 }), T0 + 9000)).toBe(2000);
    expect(runtimeMs(info('a', { state: 'closed', exitedAt: null }), T0 + 9000)).toBe(0);
  });
});

describe('usage', () => {
  it('is live CPU, RSS and process count while running', () => {
    expect(usageSummary(info('a', { usage }))).toBe('12 % · 340 MB · 3 procs');
    expect(usageSummary(info('a', { usage: { ...usage, processes: 1 } }))).toBe('12 % · 340 MB');
    expect(usageDetails(info('a', { usage }))).toBe(
      'CPU 12 % · CPU time 4.3 s · RSS 340 MB (peak RSS 412 MB) · 3 processes'
    );
  });

  it('keeps the final CPU seconds and peak RSS after the exit', () => {
    const done = info('a', { state: 'closed', exitCode: 0, usage: { ...usage, cpuPercent: 0, rssBytes: 0 } });
    expect(usageSummary(done)).toBe('4.3 s CPU · peak 412 MB');
    expect(usageDetails(done)).toBe('CPU time 4.3 s · peak RSS 412 MB');
    const brief = { ...done, usage: { ...done.usage!, cpuSeconds: 0.1, peakRssBytes: 0 } };
    expect(usageSummary(brief)).toBe('0.1 s CPU');
    expect(usageDetails(brief)).toBe('CPU time 0.1 s');
  });

  it('says nothing when the server measured nothing (older servers, queued processes)', () => {
    expect(usageSummary(info('a', { usage: undefined }))).toBe('');
    expect(usageSummary(info('a', { usage: null }))).toBe('');
    expect(usageSummary(info('a', { state: 'queued', usage }))).toBe('');
    expect(usageSummary(info('a', { state: 'restarting', usage }))).toBe('');
    expect(usageDetails(info('a', { usage: null }))).toBe('');
  });

  it('says when the log was cut', () => {
    expect(logCut(info('a', { firstSeq: 1 }))).toBe(false);
    expect(logCut(info('a', { firstSeq: 5000 }))).toBe(true);
  });
});

describe('ports', () => {
  it('gives one link per port, lowest first, with the proxy URL', () => {
    const links = portLinks(
      info('a', {
        ports: [
          { port: 8888, address: '0.0.0.0', pid: 7, url: '/user/x/proxy/8888/' },
          { port: 8000, address: '127.0.0.1', pid: 7, url: '/proxy/8000/' },
          { port: 8000, address: '::1', pid: 8, url: '/proxy/8000/' }
        ]
      })
    );
    expect(links.map(l => [l.port, l.url])).toEqual([
      [8000, '/proxy/8000/'],
      [8888, '/user/x/proxy/8888/']
    ]);
    expect(links[0].title).toBe('Open port 8000 through Jupyter: 127.0.0.1:8000 (pid 7), ::1:8000 (pid 8)');
  });

  it('shows a port without a URL as plain text (a server without the proxy)', () => {
    const [link] = portLinks(info('a', { ports: [{ port: 5000, address: '127.0.0.1', pid: 3 }] }));
    expect(link).toEqual({ port: 5000, url: null, title: 'Listening: 127.0.0.1:5000 (pid 3)' });
    expect(portLinks(info('a', { ports: undefined }))).toEqual([]);
  });
});

describe('origins', () => {
  it('names origins for group headers', () => {
    expect(originLabel(NOTEBOOK)).toBe('Notebook · analysis.ipynb');
    expect(originLabel(AGENT)).toBe('Agent · codex');
    expect(originLabel(CLI)).toBe('Command line');
    expect(originLabel({ kind: 'robot', name: 'r2' })).toBe('robot · r2');
    expect(originLabel(null)).toBe('Other');
  });

  it('orders notebooks first, unknown kinds, then no origin last', () => {
    const origins = [null, CLI, { kind: 'robot', name: 'r' }, AGENT, { kind: 'notebook', name: 'b.ipynb' }, NOTEBOOK];
    const sorted = [...origins].sort(compareOrigins).map(o => originLabel(o));
    expect(sorted).toEqual([
      'Notebook · analysis.ipynb',
      'Notebook · b.ipynb',
      'Agent · codex',
      'Command line',
      'robot · r',
      'Other'
    ]);
  });

  it('shows sh -c scripts as the script and quotes other argv', () => {
    expect(displayCommand(['/bin/sh', '-c', 'echo hi | wc'])).toBe('echo hi | wc');
    expect(displayCommand(['python', '-c', 'print(1)'])).toBe("python -c 'print(1)'");
  });
});

describe('describeSandbox', () => {
  it('names the mode and a missing network; nothing for none', () => {
    const roots = { writableRoots: ['/w'] };
    expect(describeSandbox({ sandbox: { mode: 'read-only', network: false, ...roots } })).toBe(
      'read-only, no network'
    );
    expect(describeSandbox({ sandbox: { mode: 'workspace-write', network: true, ...roots } })).toBe(
      'workspace-write'
    );
    expect(describeSandbox({ sandbox: null })).toBe('');
    expect(describeSandbox({})).toBe('');
  });
});

describe('restarts, queues and dependencies', () => {
  it('counts restarts and names the policy', () => {
    expect(restartCount(info('a'))).toBe('');
    expect(restartCount(info('a', { restarts: 1 }))).toBe('1 restart');
    expect(restartCount(info('a', { restarts: 3 }))).toBe('3 restarts');
    const onFailure = info('a', { restartPolicy: { policy: 'on-failure', maxRestarts: 2 }, restarts: 1 });
    expect(describeRestart(onFailure)).toBe('restarts on failure, 1 of at most 2');
    expect(describeRestart(info('a', { restartPolicy: { policy: 'always' } }))).toBe(
      'restarts always, 0 of at most 10'
    );
    expect(describeRestart(info('a', { restartPolicy: { policy: 'never' } }))).toBe('');
    expect(describeRestart(info('a', { restartPolicy: null }))).toBe('');
  });

  it('counts down to the next run between two runs', () => {
    const waiting = info('w', { state: 'restarting', restartAt: T0 + 2500 });
    expect(nextRunIn(waiting, T0)).toBe('next run in 3 s');
    expect(nextRunIn({ ...waiting, restartAt: T0 + 61_000 }, T0)).toBe('next run in 1:01');
    expect(nextRunIn(waiting, T0 + 3000)).toBe('next run now');
    expect(nextRunIn({ ...waiting, restartAt: null }, T0)).toBe('');
    expect(nextRunIn({ ...waiting, state: 'running' }, T0)).toBe('');
  });

  it('says what a queued process waits for, by name, and only its queue once it runs', () => {
    const names: Record<string, string> = { t1: 'train', p1: 'prepare' };
    const queued = info('e', { state: 'queued', pid: null, queue: 'gpu', after: ['t1', 'p1'] });
    expect(waitingFor(queued, id => names[id] ?? id)).toBe('queue gpu · after train, prepare');
    expect(waitingFor({ ...queued, queue: null })).toBe('after t1, p1');
    expect(waitingFor({ ...queued, state: 'running' })).toBe('queue gpu');
    expect(waitingFor(info('a'))).toBe('');
  });

  it('counts queued processes apart from running and restarting ones', () => {
    const states = ['running', 'restarting', 'queued', 'closed', 'lost'] as const;
    expect(activitySummary(states.map(state => ({ state })))).toBe('2 running, 1 queued');
    expect(activitySummary([{ state: 'running' }, { state: 'exited' }])).toBe('1 running');
    expect(activitySummary([])).toBe('0 running');
  });

  it("puts a queue's parallelism and counts into words", () => {
    expect(describeQueue({ name: 'gpu', parallel: 2, running: 1, queued: 3 })).toBe('gpu: 1 of 2 running, 3 queued');
  });
});
