/**
 * The left-sidebar "Processes" panel: every process of this server, live.
 *
 * The list is watched only while the panel is visible (a collapsed sidebar
 * holds no socket, no timer). Rows are updated in place, never rebuilt, so
 * keyboard focus survives the once-a-second runtime refresh.
 */
import { LabIcon } from '@jupyterlab/ui-components';
import { IDisposable } from '@lumino/disposable';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { ExecConnection } from './connection';
import { ProcessListModel } from './model';
import { IProcessInfo } from './protocol';
import { describeSandbox } from './startform';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 4h18a1 1 0 0 1 1 1v14a1 1 0 0 1-1 1H3a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1zm1 4v10h16V8H4z"/>
    <path d="M5.6 10.2l1.1-1.1 3.4 3.4-3.4 3.4-1.1-1.1 2.3-2.3zM11 15h4v1.6h-4z"/>
    <circle cx="18" cy="15.8" r="1.3"/>
  </g>
</svg>`;

export const processesIcon = new LabIcon({ name: 'jupyter-exec:processes', svgstr: ICON_SVG });

/** The name shown for a process: its label, else its id. */
export function displayName(info: IProcessInfo | undefined): string {
  return info ? info.label || info.processId : '';
}

/** `sh -c CMD` (how the dialog starts things) is shown as CMD. */
export function displayCommand(argv: string[]): string {
  if (argv.length === 3 && /(^|\/)(ba|da|z)?sh$/.test(argv[0]) && argv[1] === '-c') {
    return argv[2];
  }
  return argv.map(a => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

export function describeExit(exitCode: number | null, signal: string | null): string {
  if (signal) {
    return `killed by ${signal}${exitCode !== null ? ` (${exitCode})` : ''}`;
  }
  return exitCode === null ? 'exited' : `exited ${exitCode}`;
}

export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const pad = (n: number) => String(n).padStart(2, '0');
  return h ? `${h}:${pad(m)}:${pad(s % 60)}` : `${m}:${pad(s % 60)}`;
}

/** "Disconnected, reconnecting in N s [Reconnect now]", shown only while it is true. */
export class ConnectionBanner implements IDisposable {
  constructor(readonly connection: ExecConnection) {
    this.node.className = 'jp-ExecBanner';
    this.node.setAttribute('role', 'status');
    this.node.setAttribute('aria-live', 'polite');
    this._text.className = 'jp-ExecBanner-text';
    const retry = document.createElement('button');
    retry.type = 'button';
    retry.className = 'jp-ExecButton';
    retry.textContent = 'Reconnect now';
    retry.addEventListener('click', () => connection.reconnectNow());
    this.node.append(this._text, retry);
    connection.statusChanged.connect(this._update, this);
    this._update();
  }

  readonly node = document.createElement('div');

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    this._disposed = true;
    this._timer && clearInterval(this._timer);
    this.connection.statusChanged.disconnect(this._update, this);
  }

  private _update(): void {
    const down = this.connection.status === 'disconnected';
    this.node.hidden = !down;
    if (down && !this._timer) {
      this._timer = setInterval(() => this._update(), 1000);
    } else if (!down && this._timer) {
      clearInterval(this._timer);
      this._timer = null;
    }
    const wait = this.connection.retryInMs;
    this._text.textContent =
      'Disconnected from the server. ' +
      (wait === null ? 'Reconnecting…' : `Reconnecting in ${Math.ceil(wait / 1000)} s.`);
  }

  private _text = document.createElement('span');
  private _timer: ReturnType<typeof setInterval> | null = null;
  private _disposed = false;
}

interface IRow {
  item: HTMLLIElement;
  name: HTMLElement;
  command: HTMLElement;
  badge: HTMLElement;
  runtime: HTMLElement;
  pid: HTMLElement;
  sandbox: HTMLElement;
}

export interface IProcessesPanelOptions {
  model: ProcessListModel;
  /** Open a process's output view. */
  open: (processId: string) => void;
  /** Show the "New process" dialog. */
  create: () => void;
}

export class ProcessesPanel extends Widget {
  constructor(options: IProcessesPanelOptions) {
    super();
    this._model = options.model;
    this._open = options.open;
    this.id = 'jupyter-exec-processes';
    this.addClass('jp-ExecPanel');
    this.title.icon = processesIcon;
    this.title.caption = 'Processes';

    const header = document.createElement('div');
    header.className = 'jp-ExecPanel-header';
    const title = document.createElement('h2');
    title.textContent = 'Processes';
    const create = document.createElement('button');
    create.type = 'button';
    create.className = 'jp-ExecButton jp-mod-accept';
    create.textContent = 'New process';
    create.title = 'Start a process on the server';
    create.addEventListener('click', () => options.create());
    header.append(title, create);

    this._banner = new ConnectionBanner(this._model.connection);
    this._list.className = 'jp-ExecPanel-list';
    this._list.setAttribute('aria-label', 'Processes of this server');
    this._empty.className = 'jp-ExecPanel-empty';
    this.node.append(header, this._banner.node, this._empty, this._list);
    this._model.changed.connect(this._render, this);
    this._render();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._stopWatching();
    this._banner.dispose();
    this._model.changed.disconnect(this._render, this);
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._watch ??= this._model.watch();
    this._tick ??= setInterval(() => this._updateRuntimes(), 1000);
    this._render();
  }

  protected onBeforeHide(msg: Message): void {
    super.onBeforeHide(msg);
    this._stopWatching();
  }

  protected onActivateRequest(msg: Message): void {
    (this._list.querySelector('button') ?? this.node.querySelector('button'))?.focus();
  }

  private _stopWatching(): void {
    this._watch?.dispose();
    this._watch = null;
    this._tick && clearInterval(this._tick);
    this._tick = null;
  }

  private _render(): void {
    const processes = this._model.processes;
    const seen = new Set<string>();
    processes.forEach((info, index) => {
      seen.add(info.processId);
      const row = this._rows.get(info.processId) ?? this._createRow(info.processId);
      this._fill(row, info);
      if (this._list.children[index] !== row.item) {
        this._list.insertBefore(row.item, this._list.children[index] ?? null);
      }
    });
    for (const [id, row] of this._rows) {
      if (!seen.has(id)) {
        row.item.remove();
        this._rows.delete(id);
      }
    }
    this._empty.textContent = !this._model.loaded ? 'Loading…' : processes.length ? '' : 'No processes yet.';
    this._empty.hidden = this._model.loaded && processes.length > 0;
  }

  private _createRow(processId: string): IRow {
    const item = document.createElement('li');
    item.className = 'jp-ExecPanel-item';
    item.dataset.processId = processId;
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'jp-ExecPanel-row';
    button.addEventListener('click', () => this._open(processId));
    const span = (cls: string, tag = 'span') => {
      const el = document.createElement(tag);
      el.className = cls;
      return el;
    };
    const row: IRow = {
      item,
      name: span('jp-ExecPanel-name'),
      command: span('jp-ExecPanel-command', 'code'),
      badge: span('jp-ExecBadge'),
      runtime: span('jp-ExecPanel-runtime'),
      pid: span('jp-ExecPanel-pid'),
      sandbox: span('jp-ExecPanel-sandbox')
    };
    const top = span('jp-ExecPanel-line');
    top.append(row.name, row.badge);
    const bottom = span('jp-ExecPanel-line jp-ExecPanel-meta');
    bottom.append(row.runtime, row.pid, row.sandbox);
    button.append(top, row.command, bottom);
    item.append(button);
    this._rows.set(processId, row);
    return row;
  }

  private _fill(row: IRow, info: IProcessInfo): void {
    const running = info.state === 'running';
    const name = displayName(info);
    const command = displayCommand(info.argv);
    const status = running ? 'running' : describeExit(info.exitCode, info.signal);
    row.item.dataset.state = info.state;
    row.name.textContent = name;
    row.command.textContent = command;
    row.badge.textContent = status;
    row.badge.dataset.state = running ? 'running' : info.exitCode === 0 ? 'ok' : info.signal ? 'signal' : 'failed';
    row.pid.textContent = info.pid !== null ? `pid ${info.pid}` : '';
    const sandbox = describeSandbox(info);
    row.sandbox.textContent = sandbox && `sandbox: ${sandbox}`;
    row.item.dataset.sandbox = info.sandbox?.mode ?? 'none';
    row.item.querySelector('button')!.setAttribute('aria-label', `${name}: ${command}, ${status}`);
    const writes = info.sandbox ? `\nsandbox: ${sandbox}; writes: ${info.sandbox.writableRoots.join(', ') || 'none'}` : '';
    row.item.title = `${info.processId}\n${info.argv.join(' ')}\ncwd: ${info.cwd}${writes}`;
    this._fillRuntime(row, info);
  }

  private _fillRuntime(row: IRow, info: IProcessInfo): void {
    const end = info.exitedAt ?? (info.state === 'running' ? this._model.serverNow() : info.startedAt);
    row.runtime.textContent = formatDuration(end - info.startedAt);
  }

  private _updateRuntimes(): void {
    for (const [id, row] of this._rows) {
      const info = this._model.get(id);
      if (info?.state === 'running') {
        this._fillRuntime(row, info);
      }
    }
  }

  private _model: ProcessListModel;
  private _open: (processId: string) => void;
  private _banner: ConnectionBanner;
  private _list = document.createElement('ul');
  private _empty = document.createElement('p');
  private _rows = new Map<string, IRow>();
  private _watch: IDisposable | null = null;
  private _tick: ReturnType<typeof setInterval> | null = null;
}
