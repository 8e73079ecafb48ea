/**
 * The status-bar item: how many processes run (and wait in queues); a click
 * opens the panel.
 * It follows the list's `changed` signal, so it costs no timer.
 */
import { Widget } from '@lumino/widgets';

import { ProcessListModel } from './model';
import { processesIcon } from './elements';
import { activitySummary } from './format';

export class RunningStatus extends Widget {
  constructor(
    readonly model: ProcessListModel,
    open: () => void
  ) {
    super({ node: document.createElement('button') });
    this.addClass('jp-ExecStatus');
    this.id = 'jupyter-exec-status';
    const node = this.node as HTMLButtonElement;
    node.type = 'button';
    processesIcon.element({ container: this._icon, tag: 'span', height: '16px', width: '16px' });
    this._icon.className = 'jp-ExecStatus-icon';
    this._text.className = 'jp-ExecStatus-text';
    node.append(this._icon, this._text);
    node.addEventListener('click', open);
    model.changed.connect(this._update, this);
    this._update();
  }

  dispose(): void {
    this.model.changed.disconnect(this._update, this);
    super.dispose();
  }

  private _update(): void {
    const n = this.model.activeCount;
    const text = this.model.loaded ? activitySummary(this.model.processes) : '…';
    if (this._text.textContent !== text) {
      this._text.textContent = text;
      this.node.title = `${n} process${n === 1 ? '' : 'es'} not done on the server (${text}): open the Processes panel`;
      this.node.dataset.running = String(n);
    }
  }

  private _icon = document.createElement('span');
  private _text = document.createElement('span');
}
