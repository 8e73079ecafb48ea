import { afterChoices, FormError, parseMemory, startParams } from '../startform';
import { info, T0 } from './fixtures';

const base = { command: 'python train.py', cwd: 'work', tty: false, pipeStdin: false, name: '' };

describe('startParams', () => {
  it('leaves limits out when the fields are empty', () => {
    const params = startParams({ ...base, timeLimit: '', memoryLimit: ' ', cpuLimit: '' });
    expect(params).toEqual({
      argv: ['/bin/sh', '-c', 'python train.py'],
      tty: false,
      label: 'python train.py',
      lifetime: 'detached',
      cwd: 'work'
    });
  });

  it('maps the time, memory and CPU limits onto timeoutMs and limits', () => {
    const params = startParams({ ...base, timeLimit: '1.5', memoryLimit: '512M', cpuLimit: '60' });
    expect(params.timeoutMs).toBe(1500);
    expect(params.limits).toEqual({ memoryBytes: 512 * 2 ** 20, cpuSeconds: 60 });
    expect(startParams({ ...base, memoryLimit: '2GiB' }).limits).toEqual({ memoryBytes: 2 ** 31 });
  });

  it('refuses bad limits with a sentence naming the field', () => {
    expect(() => startParams({ ...base, timeLimit: '-3' })).toThrow('Time limit "-3" must be');
    expect(() => startParams({ ...base, cpuLimit: '1.5' })).toThrow('whole number of seconds');
    expect(() => startParams({ ...base, memoryLimit: 'lots' })).toThrow(FormError);
    expect(() => parseMemory('100K')).toThrow('at least 1M');
  });

  it('asks for a sandbox, with or without network, or leaves it to the server', () => {
    expect(startParams({ ...base, sandbox: '' }).sandbox).toBeUndefined();
    expect(startParams({ ...base, sandbox: 'read-only' }).sandbox).toBe('read-only');
    expect(startParams({ ...base, sandbox: 'workspace-write', noNetwork: true }).sandbox).toEqual({
      mode: 'workspace-write',
      network: false
    });
    expect(() => startParams({ ...base, noNetwork: true })).toThrow('No network needs a sandbox');
  });
});

describe('restart, queue and after', () => {
  it('asks for a restart policy with its maximum, a queue and dependencies', () => {
    const params = startParams({ ...base, restart: 'on-failure', maxRestarts: '2', queue: ' gpu ', after: ['t1', 'p1'] });
    expect(params.restart).toEqual({ policy: 'on-failure', maxRestarts: 2 });
    expect(params.queue).toBe('gpu');
    expect(params.after).toEqual(['t1', 'p1']);
    expect(startParams({ ...base, restart: 'always', maxRestarts: ' ' }).restart).toEqual({ policy: 'always' });
  });

  it('leaves them out when empty, as before (a start without queue runs at once)', () => {
    const params = startParams({ ...base, restart: 'never', maxRestarts: '', queue: '  ', after: [] });
    expect(params).not.toHaveProperty('restart');
    expect(params).not.toHaveProperty('queue');
    expect(params).not.toHaveProperty('after');
  });

  it('refuses a bad maximum, or one without a policy', () => {
    expect(() => startParams({ ...base, restart: 'always', maxRestarts: '-1' })).toThrow(
      'Max restarts "-1" must be a whole number'
    );
    expect(() => startParams({ ...base, restart: 'on-failure', maxRestarts: '2.5' })).toThrow(FormError);
    expect(() => startParams({ ...base, restart: '', maxRestarts: '3' })).toThrow('Max restarts needs a restart policy');
  });
});

describe('afterChoices', () => {
  it('offers what may still succeed, then what succeeded, newest first; never a failure', () => {
    const processes = [
      info('ok', { label: 'prepare', state: 'closed', exitCode: 0, startedAt: T0 + 3 }),
      info('bad', { state: 'closed', exitCode: 1, startedAt: T0 + 4 }),
      info('killed', { state: 'closed', exitCode: 0, signal: 'SIGTERM', startedAt: T0 + 6 }),
      info('lost', { state: 'lost', startedAt: T0 + 7 }),
      info('train', { label: 'train', startedAt: T0 + 1 }),
      info('wait', { state: 'queued', pid: null, startedAt: T0 + 5 })
    ];
    expect(afterChoices(processes)).toEqual([
      { value: 'wait', text: 'wait (queued)' },
      { value: 'train', text: 'train (running)' },
      { value: 'ok', text: 'prepare (exited 0)' }
    ]);
  });
});
