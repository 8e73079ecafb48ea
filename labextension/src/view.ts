/**
 * One process's output in a main-area tab, rendered by xterm.js as
 * JupyterLab's own terminal does.
 *
 * The view only renders: `ProcessStream` (model.ts) owns seq order, resume and
 * gap recovery. xterm is imported on first open, so a session that never
 * opens a process view never downloads it.
 */
import { ServerConnection } from '@jupyterlab/services';
import { URLExt } from '@jupyterlab/coreutils';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';
import type { Terminal } from '@xterm/xterm';
import type { FitAddon } from '@xterm/addon-fit';

import { ExecConnection } from './connection';
import { OutputEvent, ProcessListModel, ProcessStream } from './model';
import { IProcessInfo, PROCESSES_PATH, SignalName } from './protocol';
import { ConnectionBanner, fillBadge, fillPorts, processesIcon } from './elements';
import {
  describeExit,
  describeRestart,
  displayCommand,
  displayName,
  isActive,
  logCut,
  originLabel,
  shownState,
  usageDetails,
  waitingFor
} from './format';

const STDERR_ON = '\x1b[91m';
const COLOR_OFF = '\x1b[39m';
const DIM = (s: string) => `\r\n\x1b[2m${s}\x1b[22m\r\n`;

/** Read a theme variable, so the terminal follows light and dark themes. */
function cssVar(name: string, fallback: string): string {
  return getComputedStyle(document.body).getPropertyValue(name).trim() || fallback;
}

function terminalTheme() {
  const light = document.body.dataset.jpThemeLight !== 'false';
  return {
    background: cssVar('--jp-layout-color0', light ? '#ffffff' : '#111111'),
    foreground: cssVar('--jp-ui-font-color0', light ? '#000000' : '#ffffff'),
    cursor: cssVar('--jp-ui-font-color1', light ? '#616161' : '#f8f8f0'),
    cursorAccent: cssVar('--jp-layout-color0', light ? '#ffffff' : '#111111'),
    selectionBackground: light ? 'rgba(97, 97, 97, 0.3)' : 'rgba(255, 255, 255, 0.3)'
  };
}

export interface IProcessViewOptions {
  processId: string;
  connection: ExecConnection;
  list: ProcessListModel;
  serverSettings: ServerConnection.ISettings;
}

export class ProcessView extends Widget {
  constructor(options: IProcessViewOptions) {
    super();
    this.processId = options.processId;
    this._connection = options.connection;
    this._list = options.list;
    this._settings = options.serverSettings;
    this.id = `jupyter-exec-view-${options.processId.replace(/[^\w-]/g, '_')}`;
    this.addClass('jp-ExecView');
    this.title.icon = processesIcon;
    this.title.closable = true;
    this.title.label = options.processId;

    this._banner = new ConnectionBanner(this._connection);
    this._details.className = 'jp-ExecView-details';
    this._usage.className = 'jp-ExecView-usage';
    this._ports.className = 'jp-ExecView-ports';
    this._cut.className = 'jp-ExecView-cut';
    this._origin.className = 'jp-ExecView-origin';
    this._managed.className = 'jp-ExecView-managed';
    this._details.append(this._origin, this._managed, this._usage, this._ports, this._cut);
    this.node.append(this._toolbar(), this._details, this._banner.node, this._status, this._term, this._input);
    this._status.className = 'jp-ExecView-status';
    this._status.setAttribute('role', 'status');
    this._term.className = 'jp-ExecView-terminal';
    this._buildInput();
    // Polled, not just watched: the details line shows live usage and ports.
    this._listWatch = this._list.poll();
    this._list.changed.connect(this._update, this);
    this._update();
  }

  readonly processId: string;

  /** The process as the list knows it (undefined until listed, or once removed). */
  get info(): IProcessInfo | undefined {
    return this._list.get(this.processId);
  }

  dispose(): void {
    if (this.isDisposed) {
      return;
    }
    this._themeObserver?.disconnect();
    this._resizeTimer && clearTimeout(this._resizeTimer);
    this._stream?.dispose();
    this._terminal?.dispose();
    this._banner.dispose();
    this._listWatch.dispose();
    this._list.changed.disconnect(this._update, this);
    super.dispose();
  }

  protected onAfterAttach(msg: Message): void {
    super.onAfterAttach(msg);
    if (!this._terminal && !this._starting) {
      this._starting = true;
      void this._startTerminal();
    }
  }

  /** Closing the tab ends the view (a plain Widget would only detach and stay tracked). */
  protected onCloseRequest(msg: Message): void {
    super.onCloseRequest(msg);
    this.dispose();
  }

  protected onResize(msg: Widget.ResizeMessage): void {
    super.onResize(msg);
    this._fit();
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._fit();
  }

  protected onActivateRequest(msg: Message): void {
    const info = this.info;
    if (info && !info.tty && !this._input.hidden) {
      this._inputField.focus();
    } else if (this._terminal) {
      this._terminal.focus();
    } else {
      this._term.focus();
    }
  }

  private async _startTerminal(): Promise<void> {
    const [{ Terminal }, { FitAddon }, info] = await Promise.all([
      import('@xterm/xterm'),
      import('@xterm/addon-fit'),
      this._infoKnown(),
      import('@xterm/xterm/css/xterm.css')
    ]);
    if (this.isDisposed) {
      return;
    }
    const tty = info?.tty ?? true;
    const terminal = new Terminal({
      convertEol: !tty, // pipe output has bare \n; \r progress bars still work
      disableStdin: !tty,
      scrollback: 100000,
      fontFamily: cssVar('--jp-code-font-family', 'monospace'),
      fontSize: parseInt(cssVar('--jp-code-font-size', '13px'), 10) || 13,
      theme: terminalTheme()
    });
    const fit = new FitAddon();
    terminal.loadAddon(fit);
    terminal.open(this._term);
    this._terminal = terminal;
    this._fitAddon = fit;
    this._themeObserver = new MutationObserver(() => (terminal.options.theme = terminalTheme()));
    this._themeObserver.observe(document.body, { attributes: true, attributeFilter: ['data-jp-theme-light'] });
    terminal.onData(data => this._typed(data));
    terminal.onBinary(data => this._typed(data));
    terminal.onResize(size => this._sendSize(size));
    this._fit();

    // Only now: events emitted before the terminal existed would be lost.
    this._stream = new ProcessStream(this._connection, this.processId);
    this._stream.output.connect((_, e) => this._render(e));
    this._stream.changed.connect(this._update, this);
    if (tty) {
      this._sendSize({ rows: terminal.rows, cols: terminal.cols }); // the pty takes the view's size
    }
    this._update();
  }

  /**
   * The process's info, once the list has it. A process we just started is
   * announced by `process/started` right after the start response (SPEC 1),
   * so an absent id gets a moment before the view settles for defaults.
   */
  private _infoKnown(): Promise<IProcessInfo | undefined> {
    return new Promise(resolve => {
      let timer: ReturnType<typeof setTimeout> | null = null;
      const check = (): void => {
        if (this.info || this.isDisposed) {
          done();
        } else if (this._list.loaded && !timer) {
          timer = setTimeout(done, 3000);
        }
      };
      const done = (): void => {
        timer && clearTimeout(timer);
        this._list.changed.disconnect(check);
        resolve(this.info);
      };
      this._list.changed.connect(check);
      check();
    });
  }

  private _typed(data: string): void {
    const info = this.info;
    if (info?.tty && info.state === 'running' && this._stream && !this._stream.exited) {
      this._stream.write(data);
    }
  }

  private _render(event: OutputEvent): void {
    if (event.kind === 'dropped') {
      this._write(DIM(`[output ${event.fromSeq}..${event.toSeq} was dropped by the server's retention limit]`));
    } else if (event.kind === 'restarted') {
      this._write(DIM(`[process ${describeExit(event.exitCode, event.signal)}: restart ${event.restarts}]`));
    } else if (event.stream === 'stderr') {
      this._write(STDERR_ON);
      this._write(event.data);
      this._write(COLOR_OFF);
    } else {
      this._write(event.data);
    }
  }

  /** Write now, or hold while follow is off (scroll lock) and flush when it is back on. */
  private _write(data: string | Uint8Array): void {
    if (!this._follow) {
      this._held.push(data);
      this._heldBytes += data.length;
      this._updateFollow();
      return;
    }
    this._terminal?.write(data);
  }

  private _setFollow(follow: boolean): void {
    this._follow = follow;
    if (follow) {
      const held = this._held;
      this._held = [];
      this._heldBytes = 0;
      held.forEach(d => this._terminal?.write(d));
      this._terminal?.write('', () => this._terminal?.scrollToBottom());
    }
    this._updateFollow();
  }

  private _fit(): void {
    if (this._fitAddon && this.isVisible) {
      try {
        this._fitAddon.fit();
      } catch {
        /* not laid out yet */
      }
    }
  }

  /** Debounced: dragging a splitter must not flood `process/resize`. */
  private _sendSize(size: { rows: number; cols: number }): void {
    if (this._resizeTimer) {
      clearTimeout(this._resizeTimer);
    }
    this._resizeTimer = setTimeout(() => {
      this._resizeTimer = null;
      const info = this.info;
      if (info?.tty && info.state === 'running') {
        this._stream?.resize(size).catch(() => undefined);
      }
    }, 100);
  }

  private _toolbar(): HTMLElement {
    const bar = document.createElement('div');
    bar.className = 'jp-ExecView-toolbar';
    bar.setAttribute('role', 'toolbar');
    bar.setAttribute('aria-label', 'Process actions');
    this._badge.className = 'jp-ExecBadge';
    this._command.className = 'jp-ExecView-command';
    const button = (label: string, title: string, action: () => unknown) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.className = 'jp-ExecButton';
      b.textContent = label;
      b.title = title;
      b.dataset.action = label.toLowerCase();
      b.addEventListener('click', () => {
        Promise.resolve(action()).catch(error => this._showError(error));
      });
      return b;
    };
    const signal = (name: SignalName) => () => this._stream?.sendSignal(name);
    this._buttons = {
      follow: button('Follow', 'Follow new output; off holds output back (scroll lock)', () =>
        this._setFollow(!this._follow)
      ),
      interrupt: button('Interrupt', 'Send SIGINT to the process group', signal('interrupt')),
      terminate: button('Terminate', 'SIGTERM, then SIGKILL after a grace period', () => this._stream?.terminate()),
      kill: button('Kill', 'Send SIGKILL to the process group', signal('kill')),
      download: button('Download', 'Download the full output log', () => this._download()),
      remove: button('Remove', 'Forget this exited process and delete its log', () => this._remove())
    };
    bar.append(this._badge, this._command, ...Object.values(this._buttons));
    this._updateFollow();
    return bar;
  }

  private _buildInput(): void {
    this._input.className = 'jp-ExecView-input';
    this._input.hidden = true;
    this._inputField.type = 'text';
    this._inputField.className = 'jp-mod-styled';
    this._inputField.placeholder = 'Send a line to stdin (Enter)';
    this._inputField.setAttribute('aria-label', 'Standard input');
    const send = document.createElement('button');
    send.type = 'submit';
    send.className = 'jp-ExecButton';
    send.textContent = 'Send';
    const eof = document.createElement('button');
    eof.type = 'button';
    eof.className = 'jp-ExecButton';
    eof.textContent = 'EOF';
    eof.title = 'Close stdin';
    this._input.append(this._inputField, send, eof);
    this._input.addEventListener('submit', event => {
      event.preventDefault();
      this._stream?.write(`${this._inputField.value}\n`);
      this._inputField.value = '';
    });
    eof.addEventListener('click', () => this._stream?.write('', true));
  }

  private async _download(): Promise<void> {
    const url = URLExt.join(this._settings.baseUrl, PROCESSES_PATH, encodeURIComponent(this.processId), 'output');
    const response = await ServerConnection.makeRequest(url, {}, this._settings);
    if (!response.ok) {
      throw new ServerConnection.ResponseError(response);
    }
    const blob = await response.blob();
    const href = URL.createObjectURL(blob);
    const a = document.createElement('a');
    a.href = href;
    a.download = `${displayName(this.info) || this.processId}.log`.replace(/[\\/:*?"<>|\s]+/g, '_');
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(href), 10000);
  }

  /** Through the list model (`process/remove`); one the server already forgot just closes. */
  private async _remove(): Promise<void> {
    try {
      await this._list.remove(this.processId);
    } catch (error) {
      if (this._list.get(this.processId)) {
        throw error;
      }
    }
    this.close();
  }

  private _showError(error: unknown): void {
    this._status.textContent = `Error: ${error instanceof Error ? error.message : String(error)}`;
    this._status.classList.add('jp-mod-error');
  }

  /** Sync the toolbar, title and exit line with the list and the stream. */
  private _update(): void {
    const info = this.info;
    const stream = this._stream;
    const shown = shownState(info, stream);
    // Queued or between two runs: no pid to signal, but Terminate ends it (SPEC 11).
    const active = isActive(shown);
    const running = shown.state === 'running';
    const name = displayName(info) || this.processId;
    this.title.label = name;
    this.title.caption = `${name}\n${info ? displayCommand(info.argv) : ''}`;
    this._command.textContent = info ? displayCommand(info.argv) : '';
    this._command.title = info ? info.argv.join(' ') : '';
    fillBadge(this._badge, shown);
    this.node.dataset.state = active ? 'running' : 'exited';
    this._fillDetails(info);
    const b = this._buttons;
    b.interrupt.disabled = b.kill.disabled = !running;
    b.terminate.disabled = !active;
    b.remove.disabled = active || !info;
    this._input.hidden = !(info && !info.tty && running && info.pipeStdin !== false && !stream?.stdinClosed);
    if (stream?.error) {
      this._status.textContent = `${stream.error}`;
      this._status.classList.add('jp-mod-error');
    } else if (stream && !stream.caughtUp) {
      this._status.textContent = 'Loading output…';
    } else if (!this._status.classList.contains('jp-mod-error')) {
      this._status.textContent = '';
    }
    if (stream?.atEnd && !this._exitShown) {
      this._exitShown = true;
      this._write(DIM(`[process ${describeExit(stream.exitCode, stream.signal)}]`));
    }
  }

  /**
   * Origin, restarts, queue and dependencies, why it never started, usage,
   * port links and "log cut": everything the list knows beyond the toolbar.
   */
  private _fillDetails(info: IProcessInfo | undefined): void {
    this._origin.textContent = info?.origin ? `from ${originLabel(info.origin)}` : '';
    const nameOf = (id: string) => displayName(this._list.get(id)) || id;
    const managed = info ? [describeRestart(info), waitingFor(info, nameOf), info.failure ?? ''] : [];
    this._managed.textContent = managed.filter(Boolean).join(' · ');
    this._usage.textContent = info ? usageDetails(info) : '';
    if (info) {
      fillPorts(this._ports, info);
    }
    const cut = !!info && logCut(info);
    this._cut.hidden = !cut;
    this._cut.textContent = cut ? `log cut: output before seq ${info!.firstSeq} was dropped` : '';
    const text = this._origin.textContent || this._managed.textContent || this._usage.textContent;
    this._details.hidden = !(text || cut || info?.ports?.length);
  }

  private _updateFollow(): void {
    const b = this._buttons?.follow;
    if (b) {
      b.setAttribute('aria-pressed', String(this._follow));
      b.textContent = this._follow ? 'Follow' : `Follow (${Math.ceil(this._heldBytes / 1024)} KiB held)`;
    }
  }

  private _connection: ExecConnection;
  private _list: ProcessListModel;
  private _settings: ServerConnection.ISettings;
  private _listWatch: { dispose(): void };
  private _banner: ConnectionBanner;
  private _stream: ProcessStream | null = null;
  private _terminal: Terminal | null = null;
  private _fitAddon: FitAddon | null = null;
  private _themeObserver: MutationObserver | null = null;
  private _starting = false;
  private _resizeTimer: ReturnType<typeof setTimeout> | null = null;
  private _follow = true;
  private _held: (string | Uint8Array)[] = [];
  private _heldBytes = 0;
  private _exitShown = false;
  private _details = document.createElement('div');
  private _origin = document.createElement('span');
  private _managed = document.createElement('span');
  private _usage = document.createElement('span');
  private _ports = document.createElement('span');
  private _cut = document.createElement('span');
  private _badge = document.createElement('span');
  private _command = document.createElement('code');
  private _status = document.createElement('div');
  private _term = document.createElement('div');
  private _input = document.createElement('form');
  private _inputField = document.createElement('input');
  private _buttons!: Record<'follow' | 'interrupt' | 'terminate' | 'kill' | 'download' | 'remove', HTMLButtonElement>;
}
