/**
 * One JSON-RPC websocket to the exec server, kept alive while anyone needs it.
 *
 * DOM-free on purpose (only a WebSocket-like object and timers): the
 * reconnect, resume and request bookkeeping are the parts most worth testing,
 * and they run in jest against a fake socket.
 *
 * Lifecycle: `acquire()` opens the socket on first use; the last `dispose()`
 * of an acquisition closes it after `idleCloseMs`, so a closed panel costs no
 * connection. While acquired, a lost socket is reopened with exponential
 * backoff and the handshake (SPEC 2) asks to resume the previous session, so
 * the server restores its subscriptions; `connected` then tells the models to
 * catch up from their last seq.
 */
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { ISignal, Signal } from '@lumino/signaling';

import { IMethods, Method, Notification } from './protocol';

/** What the connection needs from a WebSocket; the browser's satisfies it. */
export interface IWebSocketLike {
  readonly readyState: number;
  onopen: ((event: unknown) => void) | null;
  onclose: ((event: unknown) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type ConnectionStatus = 'idle' | 'connecting' | 'connected' | 'disconnected';

export interface IConnectedArgs {
  sessionId: string;
  /** True when the server re-attached the previous session (its subscriptions are back). */
  resumed: boolean;
}

export interface IConnectionOptions {
  /** Full websocket URL, token included; a function is re-evaluated on every attempt. */
  url: string | (() => string);
  createSocket?: (url: string) => IWebSocketLike;
  clientName?: string;
  /** First reconnect delay; doubles per failed attempt up to `maxBackoffMs`. */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** How long the socket stays open after the last acquisition is released. */
  idleCloseMs?: number;
}

/** A JSON-RPC error answer from the server. */
export class RpcError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly data?: unknown
  ) {
    super(message);
    this.name = 'RpcError';
  }
}

/** The socket closed before the answer came: the request may or may not have run. */
export class ConnectionLostError extends Error {
  constructor(message = 'not connected to the exec server') {
    super(message);
    this.name = 'ConnectionLostError';
  }
}

interface IPending {
  resolve: (value: any) => void;
  reject: (error: Error) => void;
}

const OPEN = 1;

export class ExecConnection implements IDisposable {
  constructor(options: IConnectionOptions) {
    this._options = options;
  }

  /** Emitted on every status change. */
  get statusChanged(): ISignal<this, ConnectionStatus> {
    return this._statusChanged;
  }

  /** Emitted after each successful handshake, first connect and every reconnect. */
  get connected(): ISignal<this, IConnectedArgs> {
    return this._connected;
  }

  /** Every server notification, for every process; listeners filter. */
  get notification(): ISignal<this, Notification> {
    return this._notification;
  }

  get status(): ConnectionStatus {
    return this._status;
  }

  get sessionId(): string | null {
    return this._sessionId;
  }

  /** Milliseconds until the next reconnect attempt, or null when none is scheduled. */
  get retryInMs(): number | null {
    return this._retryAt === null ? null : Math.max(0, this._retryAt - Date.now());
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Keep the connection open until the returned handle is disposed. */
  acquire(): IDisposable {
    this._users++;
    this._clearIdleTimer();
    if (this._status === 'idle') {
      this._open();
    }
    return new DisposableDelegate(() => {
      if (--this._users === 0) {
        this._scheduleIdleClose();
      }
    });
  }

  /** Skip the backoff wait (the banner's "Reconnect now"). */
  reconnectNow(): void {
    if (this._status === 'disconnected') {
      this._clearRetryTimer();
      this._open();
    }
  }

  /**
   * Send a request and resolve with its result.
   *
   * Rejects with `ConnectionLostError` when not connected or when the socket
   * drops before the answer: callers that must not lose work (writes) retry
   * after `connected`, with an idempotency key.
   */
  request<M extends Method>(method: M, params: IMethods[M]['params']): Promise<IMethods[M]['result']> {
    if (this._status !== 'connected') {
      return Promise.reject(new ConnectionLostError());
    }
    return this._send(method, params);
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    this._close('idle');
    Signal.clearData(this);
  }

  private _send(method: string, params: unknown): Promise<any> {
    const socket = this._socket;
    if (!socket || socket.readyState !== OPEN) {
      return Promise.reject(new ConnectionLostError());
    }
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      socket.send(JSON.stringify({ jsonrpc: '2.0', id, method, params }));
    });
  }

  private _open(): void {
    this._setStatus('connecting');
    const url = typeof this._options.url === 'function' ? this._options.url() : this._options.url;
    const create = this._options.createSocket ?? ((u: string) => new WebSocket(u) as IWebSocketLike);
    let socket: IWebSocketLike;
    try {
      socket = create(url);
    } catch {
      this._onSocketLost();
      return;
    }
    this._socket = socket;
    socket.onopen = () => void this._handshake(socket);
    socket.onmessage = event => this._onMessage(event.data);
    socket.onclose = () => {
      if (this._socket === socket) {
        this._onSocketLost();
      }
    };
    socket.onerror = () => {
      /* onclose follows and does the work */
    };
  }

  /**
   * SPEC 2: initialize (resuming when we had a session), then initialized.
   * A refused resume (expired, or the server restarted) is retried at once as
   * a fresh session; `connected` then says `resumed: false` so models
   * re-subscribe. Anything else closes the socket and backs off.
   */
  private async _handshake(socket: IWebSocketLike): Promise<void> {
    const previous = this._sessionId;
    const clientName = this._options.clientName ?? 'jupyterlab';
    let result: IMethods['initialize']['result'];
    try {
      try {
        result = await this._send('initialize', previous ? { clientName, resumeSessionId: previous } : { clientName });
      } catch (error) {
        if (!previous || !(error instanceof RpcError) || this._socket !== socket) {
          throw error;
        }
        this._sessionId = null;
        result = await this._send('initialize', { clientName });
      }
    } catch {
      if (this._socket === socket) {
        this._sessionId = null;
        socket.close();
      }
      return;
    }
    if (this._socket !== socket) {
      return;
    }
    socket.send(JSON.stringify({ jsonrpc: '2.0', method: 'initialized', params: {} }));
    this._sessionId = result.sessionId;
    this._attempt = 0;
    this._setStatus('connected');
    this._connected.emit({ sessionId: result.sessionId, resumed: previous === result.sessionId });
  }

  private _onMessage(data: unknown): void {
    let message: any;
    try {
      message = JSON.parse(typeof data === 'string' ? data : new TextDecoder().decode(data as ArrayBuffer));
    } catch {
      return;
    }
    if (!message || typeof message !== 'object') {
      return;
    }
    if (message.id !== undefined && message.id !== null && !message.method) {
      const pending = this._pending.get(message.id);
      if (!pending) {
        return;
      }
      this._pending.delete(message.id);
      if (message.error) {
        const { code, message: text, data: extra } = message.error;
        pending.reject(new RpcError(code, text, extra));
      } else {
        pending.resolve(message.result);
      }
    } else if (typeof message.method === 'string' && message.id === undefined) {
      this._notification.emit(message as Notification);
    }
  }

  private _onSocketLost(): void {
    this._socket = null;
    this._failPending();
    if (this._users > 0 && !this._disposed) {
      this._setStatus('disconnected');
      this._scheduleRetry();
    } else {
      this._setStatus('idle');
    }
  }

  private _scheduleRetry(): void {
    this._clearRetryTimer();
    const initial = this._options.initialBackoffMs ?? 500;
    const max = this._options.maxBackoffMs ?? 15000;
    // Full doubling with +-25 % jitter, so many tabs do not reconnect in step.
    const base = Math.min(max, initial * 2 ** this._attempt++);
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    this._retryAt = Date.now() + delay;
    this._retryTimer = setTimeout(() => {
      this._retryTimer = null;
      this._retryAt = null;
      if (this._users > 0 && !this._disposed) {
        this._open();
      }
    }, delay);
    // Re-emit so a banner can show the new countdown.
    this._statusChanged.emit(this._status);
  }

  private _scheduleIdleClose(): void {
    this._clearIdleTimer();
    this._idleTimer = setTimeout(() => {
      this._idleTimer = null;
      if (this._users === 0) {
        this._close('idle');
        this._sessionId = null; // nothing to resume: no one was listening
      }
    }, this._options.idleCloseMs ?? 10000);
  }

  private _close(status: ConnectionStatus): void {
    this._clearRetryTimer();
    this._clearIdleTimer();
    const socket = this._socket;
    this._socket = null;
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
      socket.close(1000, 'idle');
    }
    this._failPending();
    this._setStatus(status);
  }

  private _failPending(): void {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      p.reject(new ConnectionLostError('connection to the exec server lost'));
    }
  }

  private _clearRetryTimer(): void {
    if (this._retryTimer !== null) {
      clearTimeout(this._retryTimer);
      this._retryTimer = null;
    }
    this._retryAt = null;
  }

  private _clearIdleTimer(): void {
    if (this._idleTimer !== null) {
      clearTimeout(this._idleTimer);
      this._idleTimer = null;
    }
  }

  private _setStatus(status: ConnectionStatus): void {
    if (this._status !== status) {
      this._status = status;
      this._statusChanged.emit(status);
    }
  }

  private _options: IConnectionOptions;
  private _socket: IWebSocketLike | null = null;
  private _status: ConnectionStatus = 'idle';
  private _sessionId: string | null = null;
  private _nextId = 1;
  private _pending = new Map<number, IPending>();
  private _users = 0;
  private _attempt = 0;
  private _retryTimer: ReturnType<typeof setTimeout> | null = null;
  private _retryAt: number | null = null;
  private _idleTimer: ReturnType<typeof setTimeout> | null = null;
  private _disposed = false;
  private _statusChanged = new Signal<this, ConnectionStatus>(this);
  private _connected = new Signal<this, IConnectedArgs>(this);
  private _notification = new Signal<this, Notification>(this);
}
