/**
 * What the panel shows of a long list: the filter (text and state), the
 * groups by origin, and which processes "Clear finished" removes.
 *
 * DOM-free, so the rules hold in jest exactly as in the panel: with hundreds
 * of processes the panel only renders what these functions return.
 */
import { compareOrigins, displayCommand, isActive, isFailure, originKey, originLabel } from './format';
import { IOrigin, IProcessInfo } from './protocol';

export type StateFilter = 'all' | 'running' | 'finished' | 'failed';

export interface IListFilter {
  /** Words that must all appear (any case) in the name, command, id, origin or ports. */
  text: string;
  state: StateFilter;
}

export const NO_FILTER: IListFilter = { text: '', state: 'all' };

export interface IGroup {
  key: string;
  origin: IOrigin | null;
  label: string;
  /** The processes shown, newest first. */
  processes: IProcessInfo[];
  /** How many of them are running (or queued, restarting). */
  active: number;
  /** How many of those wait in a queue or for their `after` processes. */
  queued: number;
}

/** What the text filter looks in. */
function haystack(info: IProcessInfo): string {
  const ports = (info.ports ?? []).map(p => `:${p.port}`).join(' ');
  return [
    info.label ?? '',
    info.processId,
    displayCommand(info.argv),
    info.origin?.name ?? '',
    originLabel(info.origin),
    ports,
    info.pid !== null ? String(info.pid) : ''
  ]
    .join('\n')
    .toLowerCase();
}

function matchesState(info: IProcessInfo, state: StateFilter): boolean {
  switch (state) {
    case 'running':
      return isActive(info);
    case 'finished':
      return !isActive(info);
    case 'failed':
      return isFailure(info);
    default:
      return true;
  }
}

export function matches(info: IProcessInfo, filter: IListFilter): boolean {
  if (!matchesState(info, filter.state)) {
    return false;
  }
  const words = filter.text.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) {
    return true;
  }
  const text = haystack(info);
  return words.every(w => text.includes(w));
}

/** The shown processes in groups by origin (notebooks first), each newest first. */
export function groupProcesses(processes: IProcessInfo[], filter: IListFilter = NO_FILTER): IGroup[] {
  const groups = new Map<string, IGroup>();
  const sorted = [...processes].sort((a, b) => b.startedAt - a.startedAt || a.processId.localeCompare(b.processId));
  for (const info of sorted) {
    if (!matches(info, filter)) {
      continue;
    }
    const key = originKey(info.origin);
    let group = groups.get(key);
    if (!group) {
      const origin = info.origin ?? null;
      group = { key, origin, label: originLabel(origin), processes: [], active: 0, queued: 0 };
      groups.set(key, group);
    }
    group.processes.push(info);
    group.active += isActive(info) ? 1 : 0;
    group.queued += info.state === 'queued' ? 1 : 0;
  }
  return [...groups.values()].sort((a, b) => compareOrigins(a.origin, b.origin));
}

/** The ids "Clear finished" removes: the finished processes the filter shows. */
export function finishedIds(processes: IProcessInfo[], filter: IListFilter = NO_FILTER): string[] {
  return processes.filter(p => !isActive(p) && matches(p, filter)).map(p => p.processId);
}
