/**
 * The left-sidebar "Processes" panel: every process of this server, live,
 * grouped by origin (notebook, agent, command line, panel), with a text and
 * state filter and "Clear finished", so hundreds of processes stay usable;
 * above the groups, a line per queue with its parallelism to edit (SPEC 11).
 *
 * Usage and ports are polled only while the panel is visible (a collapsed
 * sidebar holds no timer). Rows are updated in place, never rebuilt, so
 * keyboard focus survives the once-a-second runtime refresh; renders are
 * batched to one per animation frame, whatever the burst of notifications.
 */
import { IDisposable } from '@lumino/disposable';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { ConnectionBanner, fillBadge, fillPorts, processesIcon, setText } from './elements';
import {
  activitySummary,
  describeQueue,
  describeRestart,
  describeSandbox,
  displayCommand,
  displayName,
  formatDuration,
  isActive,
  logCut,
  nextRunIn,
  restartCount,
  runtimeMs,
  usageDetails,
  usageSummary,
  waitingFor
} from './format';
import { finishedIds, groupProcesses, IGroup, IListFilter, StateFilter } from './listing';
import { ProcessListModel } from './model';
import { IProcessInfo, IQueueInfo } from './protocol';

interface IRow {
  item: HTMLLIElement;
  button: HTMLButtonElement;
  name: HTMLElement;
  command: HTMLElement;
  badge: HTMLElement;
  runtime: HTMLElement;
  usage: HTMLElement;
  cut: HTMLElement;
  pid: HTMLElement;
  sandbox: HTMLElement;
  restarts: HTMLElement;
  waiting: HTMLElement;
  ports: HTMLElement;
}

interface IQueueNode {
  item: HTMLLIElement;
  text: HTMLElement;
  parallel: HTMLInputElement;
}

interface IGroupNode {
  section: HTMLElement;
  toggle: HTMLButtonElement;
  label: HTMLElement;
  count: HTMLElement;
  list: HTMLUListElement;
}

export interface IProcessesPanelOptions {
  model: ProcessListModel;
  /** Open a process's output view. */
  open: (processId: string) => void;
  /** Show the "New process" dialog. */
  create: () => void;
}

const STATE_FILTERS: [StateFilter, string][] = [
  ['all', 'All'],
  ['running', 'Running'],
  ['finished', 'Finished'],
  ['failed', 'Failed']
];

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
    this._groups.className = 'jp-ExecPanel-groups';
    this._groups.setAttribute('aria-label', 'Processes of this server');
    this._empty.className = 'jp-ExecPanel-empty';
    this._status.className = 'jp-ExecPanel-status';
    this._status.setAttribute('role', 'status');
    this._queues.className = 'jp-ExecPanel-queues';
    this._queues.setAttribute('aria-label', 'Queues');
    this.node.append(header, this._tools(), this._banner.node, this._status, this._queues, this._empty, this._groups);
    this._model.changed.connect(this._scheduleRender, this);
    this._render();
  }

  /** The filter in effect (the text box and the state menu). */
  get filter(): IListFilter {
    return { text: this._filterText.value, state: this._filterState.value as StateFilter };
  }

  set filter(filter: IListFilter) {
    this._filterText.value = filter.text;
    this._filterState.value = filter.state;
    this._render();
  }

  /** Remove the finished processes the filter shows. */
  async clearFinished(): Promise<void> {
    const ids = finishedIds(this._model.processes, this.filter);
    if (!ids.length) {
      return;
    }
    this._clear.disabled = true;
    const failed = await this._model.removeAll(ids);
    this._error = failed.length ? `Could not remove ${failed.length} of ${ids.length}: ${failed.slice(0, 3).join(', ')}` : '';
    this._render();
  }

  /** Put the cursor in the filter box. */
  focusFilter(): void {
    this._filterText.focus();
    this._filterText.select();
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._stopWatching();
    this._frame !== null && cancelAnimationFrame(this._frame);
    this._banner.dispose();
    this._model.changed.disconnect(this._scheduleRender, this);
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._poll ??= this._model.poll();
    this._tick ??= setInterval(() => this._updateRuntimes(), 1000);
    this._render();
  }

  protected onBeforeHide(msg: Message): void {
    super.onBeforeHide(msg);
    this._stopWatching();
  }

  protected onActivateRequest(msg: Message): void {
    (this._groups.querySelector('.jp-ExecPanel-row') as HTMLElement | null)?.focus() ?? this._filterText.focus();
  }

  private _tools(): HTMLElement {
    const tools = document.createElement('div');
    tools.className = 'jp-ExecPanel-tools';
    this._filterText.type = 'search';
    this._filterText.className = 'jp-mod-styled jp-ExecPanel-filter';
    this._filterText.placeholder = 'Filter: name, command, notebook, :port';
    this._filterText.setAttribute('aria-label', 'Filter processes');
    this._filterText.addEventListener('input', () => this._render());
    this._filterState.className = 'jp-ExecPanel-state';
    this._filterState.setAttribute('aria-label', 'Show processes');
    for (const [value, text] of STATE_FILTERS) {
      this._filterState.append(new Option(text, value));
    }
    this._filterState.addEventListener('change', () => this._render());
    this._clear.type = 'button';
    this._clear.className = 'jp-ExecButton jp-ExecPanel-clear';
    this._clear.title = 'Remove the finished processes shown here, with their logs';
    this._clear.addEventListener('click', () => void this.clearFinished());
    tools.append(this._filterText, this._filterState, this._clear);
    return tools;
  }

  private _stopWatching(): void {
    this._poll?.dispose();
    this._poll = null;
    this._tick && clearInterval(this._tick);
    this._tick = null;
  }

  private _scheduleRender(): void {
    if (this._frame === null) {
      this._frame = requestAnimationFrame(() => {
        this._frame = null;
        this._render();
      });
    }
  }

  private _render(): void {
    const processes = this._model.processes;
    const filter = this.filter;
    const groups = groupProcesses(processes, filter);
    const seenGroups = new Set<string>();
    const seenRows = new Set<string>();
    let shown = 0;
    groups.forEach((group, index) => {
      seenGroups.add(group.key);
      const node = this._groupNodes.get(group.key) ?? this._createGroup(group.key);
      this._fillGroup(node, group);
      if (this._groups.children[index] !== node.section) {
        this._groups.insertBefore(node.section, this._groups.children[index] ?? null);
      }
      shown += group.processes.length;
      if (this._collapsed.has(group.key)) {
        return;
      }
      group.processes.forEach((info, i) => {
        seenRows.add(info.processId);
        const row = this._rows.get(info.processId) ?? this._createRow(info.processId);
        this._fill(row, info);
        if (node.list.children[i] !== row.item) {
          node.list.insertBefore(row.item, node.list.children[i] ?? null);
        }
      });
    });
    for (const [key, node] of this._groupNodes) {
      if (!seenGroups.has(key)) {
        node.section.remove();
        this._groupNodes.delete(key);
      }
    }
    for (const [id, row] of this._rows) {
      if (!seenRows.has(id)) {
        row.item.remove();
        this._rows.delete(id);
      }
    }
    const finished = finishedIds(processes, filter).length;
    this._clear.textContent = finished ? `Clear finished (${finished})` : 'Clear finished';
    this._clear.disabled = finished === 0;
    const filtered = filter.text.trim() !== '' || filter.state !== 'all';
    const counts = `${activitySummary(processes)}, ${processes.length} in all`;
    setText(this._status, this._error || (filtered ? `Showing ${shown} of ${processes.length} (${counts})` : counts));
    this._status.classList.toggle('jp-mod-error', !!this._error);
    this._status.hidden = !this._model.loaded || !processes.length;
    const empty = !this._model.loaded
      ? 'Loading…'
      : !processes.length
        ? 'No processes yet.'
        : !shown
          ? 'No process matches the filter.'
          : '';
    setText(this._empty, empty);
    this._empty.hidden = !empty;
    this._renderQueues(this._model.queues);
  }

  /** One line per queue: its counts, and its parallelism to edit (`queue/set`). */
  private _renderQueues(queues: IQueueInfo[]): void {
    const seen = new Set<string>();
    queues.forEach((queue, index) => {
      seen.add(queue.name);
      const node = this._queueNodes.get(queue.name) ?? this._createQueue(queue.name);
      setText(node.text, describeQueue(queue));
      // Not while the user types in it.
      if (document.activeElement !== node.parallel) {
        node.parallel.value = String(queue.parallel);
      }
      if (this._queues.children[index] !== node.item) {
        this._queues.insertBefore(node.item, this._queues.children[index] ?? null);
      }
    });
    for (const [name, node] of this._queueNodes) {
      if (!seen.has(name)) {
        node.item.remove();
        this._queueNodes.delete(name);
      }
    }
    this._queues.hidden = queues.length === 0;
  }

  private _createQueue(name: string): IQueueNode {
    const item = document.createElement('li');
    item.className = 'jp-ExecPanel-queue';
    item.dataset.queue = name;
    const text = document.createElement('span');
    text.className = 'jp-ExecPanel-queueText';
    const label = document.createElement('label');
    label.textContent = 'parallel ';
    const parallel = document.createElement('input');
    parallel.type = 'number';
    parallel.min = '1';
    parallel.step = '1';
    parallel.className = 'jp-mod-styled jp-ExecPanel-parallel';
    parallel.setAttribute('aria-label', `How many processes of queue ${name} run at once`);
    parallel.addEventListener('change', () => {
      const value = Number(parallel.value);
      if (Number.isInteger(value) && value >= 1) {
        this._model.setQueue(name, value).then(
          () => this._showError(''),
          error => this._showError(`Could not set queue ${name}: ${error instanceof Error ? error.message : error}`)
        );
      }
    });
    label.append(parallel);
    item.append(text, label);
    const node = { item, text, parallel };
    this._queueNodes.set(name, node);
    return node;
  }

  private _showError(error: string): void {
    this._error = error;
    this._render();
  }

  private _createGroup(key: string): IGroupNode {
    const section = document.createElement('section');
    section.className = 'jp-ExecPanel-group';
    section.dataset.origin = key;
    const toggle = document.createElement('button');
    toggle.type = 'button';
    toggle.className = 'jp-ExecPanel-groupHeader';
    const label = document.createElement('span');
    label.className = 'jp-ExecPanel-groupLabel';
    const count = document.createElement('span');
    count.className = 'jp-ExecPanel-groupCount';
    toggle.append(label, count);
    const list = document.createElement('ul');
    list.className = 'jp-ExecPanel-list';
    toggle.addEventListener('click', () => {
      if (!this._collapsed.delete(key)) {
        this._collapsed.add(key);
      }
      this._render();
    });
    section.append(toggle, list);
    const node = { section, toggle, label, count, list };
    this._groupNodes.set(key, node);
    return node;
  }

  private _fillGroup(node: IGroupNode, group: IGroup): void {
    const collapsed = this._collapsed.has(group.key);
    node.section.dataset.kind = group.origin?.kind ?? 'other';
    setText(node.label, group.label);
    const shown = group.processes.length;
    const running = group.active - group.queued;
    const queued = group.queued ? `, ${group.queued} queued` : '';
    setText(node.count, group.active ? `${running}/${shown} running${queued}` : String(shown));
    node.toggle.setAttribute('aria-expanded', String(!collapsed));
    node.toggle.title = `${group.label}: ${shown} shown, ${running} running${queued} (click to ${collapsed ? 'expand' : 'collapse'})`;
    node.list.hidden = collapsed;
    if (collapsed) {
      node.list.replaceChildren();
    }
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
      button,
      name: span('jp-ExecPanel-name'),
      command: span('jp-ExecPanel-command', 'code'),
      badge: span('jp-ExecBadge'),
      runtime: span('jp-ExecPanel-runtime'),
      usage: span('jp-ExecPanel-usage'),
      cut: span('jp-ExecPanel-cut'),
      pid: span('jp-ExecPanel-pid'),
      sandbox: span('jp-ExecPanel-sandbox'),
      restarts: span('jp-ExecPanel-restarts'),
      waiting: span('jp-ExecPanel-waiting'),
      ports: span('jp-ExecPanel-ports', 'div')
    };
    row.cut.textContent = 'log cut';
    row.cut.title = "The start of the output was dropped (the server's log budget)";
    const top = span('jp-ExecPanel-line');
    top.append(row.name, row.badge);
    const bottom = span('jp-ExecPanel-line jp-ExecPanel-meta');
    bottom.append(row.runtime, row.usage, row.cut, row.pid, row.restarts, row.waiting, row.sandbox);
    button.append(top, row.command, bottom);
    // Links cannot live inside a button: the ports line sits under it.
    item.append(button, row.ports);
    this._rows.set(processId, row);
    return row;
  }

  private _fill(row: IRow, info: IProcessInfo): void {
    const name = displayName(info);
    const command = displayCommand(info.argv);
    const badge = fillBadge(row.badge, info);
    row.item.dataset.state = info.state;
    setText(row.name, name);
    setText(row.command, command);
    // Between two runs the last run's pid is gone.
    setText(row.pid, info.pid !== null && info.state !== 'restarting' ? `pid ${info.pid}` : '');
    setText(row.usage, usageSummary(info));
    row.usage.title = usageDetails(info);
    row.cut.hidden = !logCut(info);
    const sandbox = describeSandbox(info);
    setText(row.sandbox, sandbox && `sandbox: ${sandbox}`);
    row.item.dataset.sandbox = info.sandbox?.mode ?? 'none';
    setText(row.restarts, restartCount(info));
    row.restarts.title = describeRestart(info);
    setText(row.waiting, waitingFor(info, id => displayName(this._model.get(id)) || id));
    fillPorts(row.ports, info);
    const label = `${name}: ${command}, ${badge.text}`;
    if (row.button.getAttribute('aria-label') !== label) {
      row.button.setAttribute('aria-label', label);
    }
    const writes = info.sandbox ? `\nsandbox: ${sandbox}; writes: ${info.sandbox.writableRoots.join(', ') || 'none'}` : '';
    const more = [describeRestart(info), info.failure ?? ''].filter(Boolean).map(s => `\n${s}`).join('');
    row.button.title = `${info.processId}\n${info.argv.join(' ')}\ncwd: ${info.cwd}${writes}${more}`;
    this._fillRuntime(row, info);
  }

  private _fillRuntime(row: IRow, info: IProcessInfo): void {
    const now = this._model.serverNow();
    setText(row.runtime, nextRunIn(info, now) || formatDuration(runtimeMs(info, now)));
  }

  private _updateRuntimes(): void {
    for (const [id, row] of this._rows) {
      const info = this._model.get(id);
      if (info && isActive(info)) {
        this._fillRuntime(row, info);
      }
    }
  }

  private _model: ProcessListModel;
  private _open: (processId: string) => void;
  private _banner: ConnectionBanner;
  private _groups = document.createElement('div');
  private _empty = document.createElement('p');
  private _status = document.createElement('div');
  private _filterText = document.createElement('input');
  private _filterState = document.createElement('select');
  private _clear = document.createElement('button');
  private _error = '';
  private _rows = new Map<string, IRow>();
  private _groupNodes = new Map<string, IGroupNode>();
  private _queues = document.createElement('ul');
  private _queueNodes = new Map<string, IQueueNode>();
  private _collapsed = new Set<string>();
  private _poll: IDisposable | null = null;
  private _tick: ReturnType<typeof setInterval> | null = null;
  private _frame: number | null = null;
}
