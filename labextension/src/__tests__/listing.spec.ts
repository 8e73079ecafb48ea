import { finishedIds, groupProcesses, matches } from '../listing';
import { AGENT, info, NOTEBOOK, twoHundred } from './fixtures';

const ids = (list: { processId: string }[]) => list.map(p => p.processId);

describe('groupProcesses with 200 processes from three origins', () => {
  const all = twoHundred();

  it('groups by origin, notebooks first, each newest first, every process once', () => {
    const groups = groupProcesses(all);
    expect(groups.map(g => g.label)).toEqual(['Notebook · analysis.ipynb', 'Agent · codex', 'Command line']);
    expect(groups.map(g => g.processes.length)).toEqual([67, 67, 66]);
    expect(groups.map(g => g.active)).toEqual([7, 7, 6]);
    expect(groups.map(g => g.queued)).toEqual([0, 0, 0]);
    expect(ids(groups[0].processes).slice(0, 3)).toEqual(['p198', 'p195', 'p192']);
    const shown = groups.flatMap(g => ids(g.processes));
    expect(new Set(shown).size).toBe(200);
  });

  it('filters by state: running, finished, failed', () => {
    const count = (state: 'running' | 'finished' | 'failed') =>
      groupProcesses(all, { text: '', state }).reduce((n, g) => n + g.processes.length, 0);
    expect(count('running')).toBe(20);
    expect(count('finished')).toBe(180);
    // Failed: finished ones with i % 7 === 0 (i % 10 !== 0): 29 multiples of 7 below 200, minus 0, 70, 140.
    expect(count('failed')).toBe(26);
  });

  it('filters by words in any order and case, across name, origin, command and port', () => {
    const job12 = groupProcesses(all, { text: 'JOB-12', state: 'all' });
    expect(job12.map(g => ids(g.processes))).toEqual([
      ['p129', 'p126', 'p123', 'p120', 'p12'],
      ['p127', 'p124', 'p121'],
      ['p128', 'p125', 'p122']
    ]);
    const agentRunning = groupProcesses(all, { text: 'codex', state: 'running' });
    expect(agentRunning.map(g => g.label)).toEqual(['Agent · codex']);
    expect(ids(agentRunning[0].processes)).toEqual(['p190', 'p160', 'p130', 'p100', 'p70', 'p40', 'p10']);
    expect(groupProcesses(all, { text: 'analysis job-3', state: 'all' }).flatMap(g => ids(g.processes))).toEqual([
      'p39',
      'p36',
      'p33',
      'p30',
      'p3'
    ]);
    expect(groupProcesses(all, { text: 'nothing-like-this', state: 'all' })).toEqual([]);
    const served = info('web', { ports: [{ port: 8000, address: '127.0.0.1', pid: 1, url: '/proxy/8000/' }] });
    expect(matches(served, { text: ':8000', state: 'all' })).toBe(true);
    expect(matches(served, { text: ':8001', state: 'all' })).toBe(false);
    expect(matches(info('x', { argv: ['python', '-m', 'http.server'] }), { text: 'HTTP.server', state: 'all' })).toBe(true);
  });

  it('puts processes without an origin in "Other", last', () => {
    const groups = groupProcesses([info('a', { origin: null }), info('b', { origin: AGENT }), info('c', { origin: NOTEBOOK })]);
    expect(groups.map(g => [g.label, ids(g.processes)])).toEqual([
      ['Notebook · analysis.ipynb', ['c']],
      ['Agent · codex', ['b']],
      ['Other', ['a']]
    ]);
  });

  it('clears only finished processes, and only those the filter shows', () => {
    const finished = finishedIds(all);
    expect(finished).toHaveLength(180);
    expect(finished.every(id => Number(id.slice(1)) % 10 !== 0)).toBe(true);
    const notebookFailed = finishedIds(all, { text: 'analysis', state: 'failed' });
    // Notebook (i % 3 === 0) and failed (i % 7 === 0, not running): the multiples of 21 but 0.
    expect(notebookFailed).toEqual(['p21', 'p42', 'p63', 'p84', 'p105', 'p126', 'p147', 'p168', 'p189']);
    expect(finishedIds(all, { text: '', state: 'running' })).toEqual([]);
    expect(finishedIds([info('q', { state: 'queued' }), info('r', { state: 'restarting' })])).toEqual([]);
  });
});

describe('groups with queued processes', () => {
  it('counts the queued ones among the active ones, and apart', () => {
    const [group] = groupProcesses([
      info('q', { state: 'queued', pid: null }),
      info('r', { state: 'restarting' }),
      info('d', { state: 'closed', exitCode: 0 })
    ]);
    expect([group.active, group.queued]).toEqual([2, 1]);
  });
});
