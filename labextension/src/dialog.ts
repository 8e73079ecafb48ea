/**
 * The "New process" dialog: command, working directory, tty toggle, name, and
 * optional limits (time, memory, CPU: `timeoutMs` and `limits`, startform.ts),
 * a sandbox (`sandbox`: read-only or workspace-write, the network on or off),
 * and how it is managed (SPEC 11): a restart policy with its maximum, a queue
 * (the server's queues are offered) and processes it must wait for (`after`).
 *
 * The command runs through `/bin/sh -c`, so pipes, quotes and `$VARS` work as
 * they would in a terminal. The working directory is the file browser's,
 * relative to the server root (the server resolves a relative `cwd` against
 * its root_dir); at the root it is left out so the server's default applies.
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IProcessInfo } from './protocol';
import { afterChoices, FormError, IFormValues, NewProcessRequest, startParams } from './startform';

type FormValue = NewProcessRequest | FormError | null;

/** What the form offers to pick from: the server's processes and queue names. */
export interface INewProcessChoices {
  processes: IProcessInfo[];
  queues: string[];
}

class NewProcessForm extends Widget implements Dialog.IBodyWidget<FormValue> {
  constructor(cwd: string, choices: INewProcessChoices) {
    super({ node: document.createElement('form') });
    this.addClass('jp-ExecDialog');
    const field = (label: string, input: HTMLInputElement, hint?: string) => {
      const row = document.createElement('label');
      row.className = 'jp-ExecDialog-field';
      const text = document.createElement('span');
      text.textContent = label;
      row.append(text, input);
      if (hint) {
        const small = document.createElement('small');
        small.textContent = hint;
        row.append(small);
      }
      return row;
    };
    const input = (name: string, value = '', type = 'text') => {
      const el = document.createElement('input');
      el.type = type;
      el.name = name;
      if (type === 'checkbox') {
        el.checked = value === 'true';
      } else {
        el.value = value;
        el.className = 'jp-mod-styled';
      }
      return el;
    };
    this._command = input('command');
    this._command.placeholder = 'e.g. python -m http.server 8000';
    this._command.required = true;
    this._cwd = input('cwd', cwd);
    this._cwd.placeholder = '(server root)';
    this._name = input('name');
    this._name.placeholder = '(the command)';
    this._tty = input('tty', 'true', 'checkbox');
    this._pipeStdin = input('pipeStdin', 'false', 'checkbox');
    const stdinRow = field('Accept input on stdin (pipe mode)', this._pipeStdin);
    stdinRow.classList.add('jp-ExecDialog-check');
    const ttyRow = field('Run in a terminal (tty)', this._tty, 'Colours, progress bars and typing, like a terminal.');
    ttyRow.classList.add('jp-ExecDialog-check');
    this._timeLimit = input('timeLimit');
    this._timeLimit.placeholder = '(none)';
    this._memoryLimit = input('memoryLimit');
    this._memoryLimit.placeholder = '(none) e.g. 2G';
    this._cpuLimit = input('cpuLimit');
    this._cpuLimit.placeholder = '(none)';
    const limits = document.createElement('fieldset');
    limits.className = 'jp-ExecDialog-limits';
    const legend = document.createElement('legend');
    legend.textContent = 'Limits and sandbox (optional)';
    limits.append(
      legend,
      field('Time limit (seconds)', this._timeLimit, 'Then it is terminated, as by Terminate.'),
      field('Memory limit', this._memoryLimit, 'Address space per process: 512M, 2G...'),
      field('CPU limit (seconds)', this._cpuLimit, 'CPU time per process; then SIGXCPU.')
    );
    this._sandbox = document.createElement('select');
    this._sandbox.name = 'sandbox';
    this._sandbox.className = 'jp-mod-styled';
    for (const [value, text] of [
      ['', "the server's policy"],
      ['workspace-write', 'workspace-write: writes only in its directory and tmp'],
      ['read-only', 'read-only: writes nowhere but a private tmp']
    ]) {
      this._sandbox.append(new Option(text, value));
    }
    this._noNetwork = input('noNetwork', 'false', 'checkbox');
    const sandboxRow = field('Sandbox', this._sandbox as unknown as HTMLInputElement);
    const networkRow = field('No network', this._noNetwork);
    networkRow.classList.add('jp-ExecDialog-check');
    limits.append(sandboxRow, networkRow);
    this._managed = this._managedFields(field, input, choices);
    const sync = () => (stdinRow.hidden = this._tty.checked);
    this._tty.addEventListener('change', sync);
    sync();
    this.node.append(
      field('Command', this._command, 'Run by /bin/sh -c in the working directory.'),
      field('Working directory', this._cwd, 'Relative to the server root, or absolute.'),
      field('Name', this._name),
      ttyRow,
      stdinRow,
      limits,
      this._managed
    );
    // Enter submits through the dialog's default button, not a page reload.
    this.node.addEventListener('submit', event => event.preventDefault());
  }

  /** Restart policy, max restarts, queue (with the server's as suggestions), after. */
  private _managedFields(
    field: (label: string, input: HTMLInputElement, hint?: string) => HTMLLabelElement,
    input: (name: string, value?: string, type?: string) => HTMLInputElement,
    choices: INewProcessChoices
  ): HTMLFieldSetElement {
    const set = document.createElement('fieldset');
    set.className = 'jp-ExecDialog-limits jp-ExecDialog-managed';
    const legend = document.createElement('legend');
    legend.textContent = 'Restarts, queue and order (optional)';
    this._restart.name = 'restart';
    this._restart.className = 'jp-mod-styled';
    for (const [value, text] of [
      ['never', 'never'],
      ['on-failure', 'on failure (an exit other than 0)'],
      ['always', 'always']
    ]) {
      this._restart.append(new Option(text, value));
    }
    this._maxRestarts = input('maxRestarts');
    this._maxRestarts.placeholder = '(10)';
    this._queue = input('queue');
    this._queue.placeholder = '(none: start at once)';
    const names = document.createElement('datalist');
    names.id = `jp-ExecDialog-queues-${Math.random().toString(36).slice(2, 8)}`;
    names.append(...choices.queues.map(q => new Option(q, q)));
    this._queue.setAttribute('list', names.id);
    this._after.name = 'after';
    this._after.multiple = true;
    this._after.className = 'jp-mod-styled jp-ExecDialog-after';
    const offered = afterChoices(choices.processes);
    this._after.append(...offered.map(c => new Option(c.text, c.value)));
    this._after.size = Math.min(5, Math.max(2, offered.length));
    const maxRow = field('Max restarts', this._maxRestarts, 'Then it stays ended. The delay doubles up to 60 s.');
    const sync = () => (maxRow.hidden = this._restart.value === 'never');
    this._restart.addEventListener('change', sync);
    sync();
    const afterRow = field(
      'Start after',
      this._after as unknown as HTMLInputElement,
      offered.length ? 'Only once every one chosen exited 0 (Ctrl-click for several).' : 'No process to wait for.'
    );
    set.append(
      legend,
      field('Restart', this._restart as unknown as HTMLInputElement),
      maxRow,
      field('Queue', this._queue, 'Waits while the queue runs its parallel limit (a new queue runs 1).'),
      names,
      afterRow
    );
    return set;
  }

  /** The request; null when the command is empty; the FormError of a bad limit. */
  getValue(): FormValue {
    if (!this._command.value.trim()) {
      return null;
    }
    try {
      return this._request();
    } catch (error) {
      if (error instanceof FormError) {
        return error; // the dialog has closed by now: the caller shows it
      }
      throw error;
    }
  }

  private _request(): NewProcessRequest {
    return startParams({
      command: this._command.value,
      cwd: this._cwd.value,
      tty: this._tty.checked,
      pipeStdin: this._pipeStdin.checked,
      name: this._name.value,
      timeLimit: this._timeLimit.value,
      memoryLimit: this._memoryLimit.value,
      cpuLimit: this._cpuLimit.value,
      sandbox: this._sandbox.value as IFormValues['sandbox'],
      noNetwork: this._noNetwork.checked,
      restart: this._restart.value as IFormValues['restart'],
      maxRestarts: this._maxRestarts.value,
      queue: this._queue.value,
      after: [...this._after.selectedOptions].map(o => o.value)
    });
  }

  private _command: HTMLInputElement;
  private _cwd: HTMLInputElement;
  private _name: HTMLInputElement;
  private _tty: HTMLInputElement;
  private _pipeStdin: HTMLInputElement;
  private _timeLimit: HTMLInputElement;
  private _memoryLimit: HTMLInputElement;
  private _cpuLimit: HTMLInputElement;
  private _sandbox: HTMLSelectElement;
  private _noNetwork: HTMLInputElement;
  private _managed: HTMLFieldSetElement;
  private _restart = document.createElement('select');
  private _maxRestarts!: HTMLInputElement;
  private _queue!: HTMLInputElement;
  private _after = document.createElement('select');
}

/** Ask for a process to start; null when cancelled or left empty. */
export async function askNewProcess(
  cwd: string,
  choices: INewProcessChoices = { processes: [], queues: [] }
): Promise<NewProcessRequest | null> {
  const result = await showDialog({
    title: 'New process',
    body: new NewProcessForm(cwd, choices),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Start' })],
    focusNodeSelector: 'input[name="command"]'
  });
  if (!result.button.accept) {
    return null;
  }
  if (result.value instanceof FormError) {
    await showErrorMessage('Cannot start the process', result.value.message);
    return null;
  }
  return result.value;
}
