/**
 * Which ended processes to announce, each once per browser (SPEC 11
 * "Waiting and being told"). DOM-free: the plugin turns the batches into
 * JupyterLab notifications.
 *
 * What this browser has seen lives in `localStorage` (shared by its tabs):
 * every finished process it has observed, announced or not, and the ids it
 * started. A process that ended while no browser was open is unseen at the
 * next open and is announced then, once; one that ended before this browser
 * first used the panel (`since`) never is, so a first visit is not a flood.
 * Keys are `processId@startedAt`: ids are chosen by clients and may come back.
 */
import { IDisposable } from '@lumino/disposable';

import { isActive, isFailure } from './format';
import { ProcessListModel } from './model';
import { IProcessInfo } from './protocol';

/** Whose ends are announced: the ones this browser started, every one, or none. */
export type NotifyScope = 'this-browser' | 'all' | 'off';

export interface INotifySettings {
  scope: NotifyScope;
  /** Only processes that did not exit 0. */
  onlyFailures: boolean;
}

export const DEFAULT_NOTIFY: INotifySettings = { scope: 'this-browser', onlyFailures: false };

/** The part of `window.localStorage` used here. */
export interface IStorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

interface IStored {
  /** Server time of this browser's first list: older ends are never announced. */
  since: number | null;
  /** Finished processes some tab of this browser has seen (announced or not). */
  seen: string[];
  /** Ids this browser started, oldest first. */
  mine: string[];
}

export const STORAGE_KEY = 'jupyter-exec:notifications';
const MAX_MINE = 1000;

export interface IExitNotifierOptions {
  list: ProcessListModel;
  storage: IStorageLike;
  /** Called with the processes to announce, in the order they ended. */
  announce: (processes: IProcessInfo[]) => void;
  settings?: INotifySettings;
}

export class ExitNotifier implements IDisposable {
  constructor(options: IExitNotifierOptions) {
    this._list = options.list;
    this._storage = options.storage;
    this._announce = options.announce;
    this.settings = options.settings ?? DEFAULT_NOTIFY;
    this._list.changed.connect(this._check, this);
    this._check();
  }

  settings: INotifySettings;

  /** Remember that this browser started `processId` (the default scope announces those). */
  markStarted(processId: string): void {
    const stored = this._load();
    stored.mine = [...stored.mine.filter(id => id !== processId), processId].slice(-MAX_MINE);
    this._save(stored);
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  dispose(): void {
    if (!this._disposed) {
      this._disposed = true;
      this._list.changed.disconnect(this._check, this);
    }
  }

  /** Compare the list with what was seen; announce the new ends that qualify. */
  private _check(): void {
    if (!this._list.loaded || this._disposed) {
      return;
    }
    const processes = this._list.processes;
    const ended = processes.filter(p => !isActive(p) && !this._handled.has(key(p)));
    if (!ended.length && this._pruned) {
      return;
    }
    // Read again: another tab may have announced some of these a moment ago.
    const stored = this._load();
    stored.since ??= this._list.serverNow();
    const seen = new Set(stored.seen);
    const mine = new Set(stored.mine);
    const fresh: IProcessInfo[] = [];
    for (const info of ended) {
      const k = key(info);
      this._handled.add(k);
      if (seen.has(k)) {
        continue;
      }
      seen.add(k);
      const endedAt = info.exitedAt ?? stored.since;
      if (endedAt >= stored.since && this._qualifies(info, mine)) {
        fresh.push(info);
      }
    }
    if (!this._pruned) {
      // Processes leave the registry for good: forget what is no longer listed.
      const listed = new Set(processes.map(key));
      stored.seen = [...seen].filter(k => listed.has(k));
      this._pruned = true;
    } else {
      stored.seen = [...seen];
    }
    this._save(stored);
    if (fresh.length) {
      fresh.sort((a, b) => (a.exitedAt ?? 0) - (b.exitedAt ?? 0));
      this._announce(fresh);
    }
  }

  private _qualifies(info: IProcessInfo, mine: Set<string>): boolean {
    const { scope, onlyFailures } = this.settings;
    if (scope === 'off' || (scope === 'this-browser' && !mine.has(info.processId))) {
      return false;
    }
    return !onlyFailures || isFailure(info);
  }

  private _load(): IStored {
    try {
      const raw = JSON.parse(this._storage.getItem(STORAGE_KEY) ?? 'null');
      if (raw && typeof raw === 'object') {
        return {
          since: typeof raw.since === 'number' ? raw.since : null,
          seen: Array.isArray(raw.seen) ? raw.seen.filter((k: unknown) => typeof k === 'string') : [],
          mine: Array.isArray(raw.mine) ? raw.mine.filter((k: unknown) => typeof k === 'string') : []
        };
      }
    } catch {
      // Unreadable (another version, or edited by hand): start again.
    }
    return { since: null, seen: [], mine: [] };
  }

  private _save(stored: IStored): void {
    try {
      this._storage.setItem(STORAGE_KEY, JSON.stringify(stored));
    } catch {
      // Storage full or disabled: announcements still work for this page.
    }
  }

  private _list: ProcessListModel;
  private _storage: IStorageLike;
  private _announce: (processes: IProcessInfo[]) => void;
  /** Ends this page has already judged (so a list change costs no storage read). */
  private _handled = new Set<string>();
  private _pruned = false;
  private _disposed = false;
}

function key(info: IProcessInfo): string {
  return `${info.processId}@${info.startedAt}`;
}
