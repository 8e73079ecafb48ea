/**
 * The jupyter-exec JupyterLab plugin: wires the connection, the list model,
 * the sidebar panel, output views, the dialog, the notifications, the status
 * bar, the launcher tile and the commands together.
 *
 * Once Lab is restored the list is watched for good (one websocket a tab):
 * the status bar counts running processes and the notifier hears every end.
 * Usage and ports are polled only while the panel or a view is shown, and
 * xterm loads only with the first view.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, Notification, showErrorMessage, WidgetTracker } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ILauncher } from '@jupyterlab/launcher';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { IStatusBar } from '@jupyterlab/statusbar';

import { ExecConnection, IWebSocketLike } from './connection';
import { askNewProcess } from './dialog';
import { exitMessage, isFailure } from './format';
import { ProcessListModel } from './model';
import { DEFAULT_NOTIFY, ExitNotifier, INotifySettings, NotifyScope } from './notify';
import { processesIcon } from './elements';
import { ProcessesPanel } from './panel';
import { IProcessInfo, newProcessId, WS_PATH } from './protocol';
import { RunningStatus } from './status';
import { ProcessView } from './view';

export * from './protocol';
export { ExecConnection } from './connection';
export { ProcessListModel, ProcessStream } from './model';

namespace CommandIDs {
  export const open = 'jupyter-exec:open';
  export const create = 'jupyter-exec:new-process';
  export const showPanel = 'jupyter-exec:show-panel';
  export const clearFinished = 'jupyter-exec:clear-finished';
  export const filter = 'jupyter-exec:filter';
}

const PLUGIN_ID = 'jupyter-exec:plugin';

/** More ends than this at once (e.g. a night's work at the next open) become one summary. */
const MAX_SINGLE_NOTIFICATIONS = 3;

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'A panel listing the server processes started through jupyter-exec, with live output views.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, IDefaultFileBrowser, ILauncher, IStatusBar, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    browser: IDefaultFileBrowser | null,
    launcher: ILauncher | null,
    statusBar: IStatusBar | null,
    settingRegistry: ISettingRegistry | null
  ) => {
    const settings = app.serviceManager.serverSettings;
    // As JupyterLab's terminals do: the token as a query parameter when configured.
    const url = () => {
      const base = URLExt.join(settings.wsUrl, WS_PATH);
      return settings.appendToken && settings.token ? `${base}?token=${encodeURIComponent(settings.token)}` : base;
    };
    const connection = new ExecConnection({
      url,
      clientName: 'jupyterlab',
      createSocket: u => new settings.WebSocket(u) as unknown as IWebSocketLike
    });
    const list = new ProcessListModel(connection);
    const tracker = new WidgetTracker<ProcessView>({ namespace: 'jupyter-exec-output' });

    const open = (processId: string): ProcessView => {
      let view = tracker.find(w => w.processId === processId);
      if (!view) {
        view = new ProcessView({ processId, connection, list, serverSettings: settings });
        void tracker.add(view);
        app.shell.add(view, 'main');
      }
      app.shell.activateById(view.id);
      return view;
    };

    const notifier = new ExitNotifier({
      list,
      storage: window.localStorage,
      announce: processes => announce(processes)
    });
    const announce = (processes: IProcessInfo[]): void => {
      if (processes.length > MAX_SINGLE_NOTIFICATIONS) {
        const failed = processes.filter(isFailure).length;
        const message = `${processes.length} processes ended${failed ? `, ${failed} of them failed` : ''}`;
        (failed ? Notification.warning : Notification.info)(message, {
          autoClose: false,
          actions: [{ label: 'Show processes', callback: () => showPanel() }]
        });
        return;
      }
      for (const info of processes) {
        const failed = isFailure(info);
        (failed ? Notification.error : Notification.success)(exitMessage(info), {
          autoClose: failed ? false : 15000,
          actions: [{ label: 'Open output', callback: () => void open(info.processId) }]
        });
      }
    };
    if (settingRegistry) {
      const apply = (s: ISettingRegistry.ISettings): void => {
        notifier.settings = {
          scope: (s.get('notifications').composite as NotifyScope) ?? DEFAULT_NOTIFY.scope,
          onlyFailures: (s.get('onlyFailures').composite as boolean) ?? DEFAULT_NOTIFY.onlyFailures
        } satisfies INotifySettings;
      };
      settingRegistry
        .load(PLUGIN_ID)
        .then(s => {
          apply(s);
          s.changed.connect(apply);
        })
        .catch(reason => console.warn('jupyter-exec: settings not loaded, notifying with defaults', reason));
    }

    const create = async (cwd?: string): Promise<ProcessView | undefined> => {
      // The launcher passes its file browser's directory; the panel's button has ours.
      const here = app.serviceManager.contents.localPath(cwd ?? browser?.model.path ?? '');
      const queues = list.queues.map(q => q.name);
      const request = await askNewProcess(here, { processes: list.processes, queues });
      if (!request) {
        return undefined;
      }
      const processId = newProcessId();
      notifier.markStarted(processId); // before the start: a quick exit must find it
      try {
        await list.start({ ...request, processId, origin: { kind: 'panel', name: 'JupyterLab' } });
        return open(processId);
      } catch (error) {
        await showErrorMessage('Could not start the process', error as Error);
        return undefined;
      }
    };

    const panel = new ProcessesPanel({ model: list, open, create: () => void create() });
    app.shell.add(panel, 'left', { rank: 950 });
    const showPanel = () => app.shell.activateById(panel.id);

    app.commands.addCommand(CommandIDs.open, {
      label: args => `Open Output of ${args.processId}`,
      execute: args => open(String(args.processId))
    });
    app.commands.addCommand(CommandIDs.create, {
      label: args => (args.isLauncher ? 'Process' : 'New Process…'),
      caption: 'Start a process on the Jupyter server and watch its output',
      icon: args => (args.isPalette ? undefined : processesIcon),
      execute: args => create(typeof args.cwd === 'string' ? args.cwd : undefined)
    });
    app.commands.addCommand(CommandIDs.showPanel, {
      label: 'Show Processes Panel',
      execute: showPanel
    });
    app.commands.addCommand(CommandIDs.clearFinished, {
      label: 'Clear Finished Processes',
      caption: 'Remove the finished processes the panel shows, with their logs',
      execute: () => panel.clearFinished()
    });
    app.commands.addCommand(CommandIDs.filter, {
      label: 'Filter Processes…',
      execute: () => {
        showPanel();
        panel.focusFilter();
      }
    });
    if (palette) {
      for (const command of [CommandIDs.create, CommandIDs.showPanel, CommandIDs.filter, CommandIDs.clearFinished]) {
        palette.addItem({ command, category: 'Processes' });
      }
    }
    if (launcher) {
      launcher.add({ command: CommandIDs.create, args: { isLauncher: true }, category: 'Other', rank: 10 });
    }
    if (statusBar) {
      statusBar.registerStatusItem('jupyter-exec:running', {
        item: new RunningStatus(list, showPanel),
        align: 'left',
        rank: 5
      });
    }
    if (restorer) {
      restorer.add(panel, 'jupyter-exec-processes');
      void restorer.restore(tracker, {
        command: CommandIDs.open,
        args: view => ({ processId: view.processId }),
        name: view => view.processId
      });
    }
    // After the restore, so the first paint of Lab does not wait for the socket.
    void app.restored.then(() => list.watch());
  }
};

export default plugin;
