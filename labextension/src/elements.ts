/**
 * DOM pieces shared by the panel, the output view and the status bar: the
 * icon, the "Disconnected" banner, the port links, the state badge, text that
 * is set only when it changed. The wording comes from format.ts; these only
 * put it on the page.
 */
import { LabIcon } from '@jupyterlab/ui-components';
import { IDisposable } from '@lumino/disposable';

import { ExecConnection } from './connection';
import { BadgeInfo, exitBadge, portLinks } from './format';
import { IProcessInfo } from './protocol';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M3 4h18a1 1 0 0 1 1 1v14a1 1 0 0 1-1 1H3a1 1 0 0 1-1-1V5a1 1 0 0 1 1-1zm1 4v10h16V8H4z"/>
    <path d="M5.6 10.2l1.1-1.1 3.4 3.4-3.4 3.4-1.1-1.1 2.3-2.3zM11 15h4v1.6h-4z"/>
    <circle cx="18" cy="15.8" r="1.3"/>
  </g>
</svg>`;

export const processesIcon = new LabIcon({ name: 'jupyter-exec:processes', svgstr: ICON_SVG });

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

/** Links to the ports a process listens on, opening through Jupyter in a new tab. */
export function fillPorts(node: HTMLElement, info: IProcessInfo): void {
  const links = portLinks(info);
  const signature = links.map(l => `${l.port}=${l.url}`).join(' ');
  if (node.dataset.ports === signature) {
    return;
  }
  node.dataset.ports = signature;
  node.replaceChildren(
    ...links.map(l => {
      const el = document.createElement(l.url ? 'a' : 'span');
      el.className = 'jp-ExecPort';
      el.textContent = `:${l.port}`;
      el.title = l.title;
      el.dataset.port = String(l.port);
      if (el instanceof HTMLAnchorElement && l.url) {
        el.href = l.url;
        el.target = '_blank';
        el.rel = 'noopener noreferrer';
      }
      return el;
    })
  );
  node.hidden = links.length === 0;
}

/** Set text only when it changed (no layout work for the 199 rows that did not). */
export function setText(node: HTMLElement, text: string): void {
  if (node.textContent !== text) {
    node.textContent = text;
  }
}

/** The state badge of a row or a view: exitBadge's words, its colour as `data-state`. */
export function fillBadge(node: HTMLElement, info: BadgeInfo): ReturnType<typeof exitBadge> {
  const badge = exitBadge(info);
  setText(node, badge.text);
  node.dataset.state = badge.state;
  return badge;
}
