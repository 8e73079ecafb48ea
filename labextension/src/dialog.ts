/**
 * The "New process" dialog: command, working directory, tty toggle, name.
 *
 * The command runs through `/bin/sh -c`, so pipes, quotes and `$VARS` work as
 * they would in a terminal. The working directory is the file browser's,
 * relative to the server root (the server resolves a relative `cwd` against
 * its root_dir); at the root it is left out so the server's default applies.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { IStartParams } from './protocol';

export type NewProcessRequest = Omit<IStartParams, 'processId'>;

/** Turn the form's values into `process/start` params. */
export function startParams(values: {
  command: string;
  cwd: string;
  tty: boolean;
  pipeStdin: boolean;
  name: string;
  size?: { rows: number; cols: number };
}): NewProcessRequest {
  const command = values.command.trim();
  const cwd = values.cwd.trim();
  const params: NewProcessRequest = {
    argv: ['/bin/sh', '-c', command],
    tty: values.tty,
    label: values.name.trim() || command,
    lifetime: 'detached'
  };
  if (cwd && cwd !== '/' && cwd !== '.') {
    params.cwd = cwd;
  }
  if (values.tty) {
    params.size = values.size ?? { rows: 24, cols: 80 };
  } else if (values.pipeStdin) {
    params.pipeStdin = true;
  }
  return params;
}

class NewProcessForm extends Widget implements Dialog.IBodyWidget<NewProcessRequest | null> {
  constructor(cwd: string) {
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
    const sync = () => (stdinRow.hidden = this._tty.checked);
    this._tty.addEventListener('change', sync);
    sync();
    this.node.append(
      field('Command', this._command, 'Run by /bin/sh -c in the working directory.'),
      field('Working directory', this._cwd, 'Relative to the server root, or absolute.'),
      field('Name', this._name),
      ttyRow,
      stdinRow
    );
    // Enter submits through the dialog's default button, not a page reload.
    this.node.addEventListener('submit', event => event.preventDefault());
  }

  getValue(): NewProcessRequest | null {
    if (!this._command.value.trim()) {
      return null;
    }
    return startParams({
      command: this._command.value,
      cwd: this._cwd.value,
      tty: this._tty.checked,
      pipeStdin: this._pipeStdin.checked,
      name: this._name.value
    });
  }

  private _command: HTMLInputElement;
  private _cwd: HTMLInputElement;
  private _name: HTMLInputElement;
  private _tty: HTMLInputElement;
  private _pipeStdin: HTMLInputElement;
}

/** Ask for a process to start; null when cancelled or left empty. */
export async function askNewProcess(cwd: string): Promise<NewProcessRequest | null> {
  const result = await showDialog({
    title: 'New process',
    body: new NewProcessForm(cwd),
    buttons: [Dialog.cancelButton(), Dialog.okButton({ label: 'Start' })],
    focusNodeSelector: 'input[name="command"]'
  });
  return result.button.accept ? result.value : null;
}
