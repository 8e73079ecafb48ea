import { FormError, parseMemory, startParams } from '../startform';

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
