/**
 * The jupyter-exec JupyterLab plugin: wires the connection, the list model,
 * the sidebar panel, output views, the dialog and the commands together.
 *
 * Activation costs one object: the websocket opens only when the panel is
 * shown or a view is open, and xterm loads only with the first view.
 */
import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, showErrorMessage, WidgetTracker } from '@jupyterlab/apputils';
import { URLExt } from '@jupyterlab/coreutils';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';

import { ExecConnection, IWebSocketLike } from './connection';
import { askNewProcess } from './dialog';
import { ProcessListModel } from './model';
import { ProcessesPanel } from './panel';
import { WS_PATH } from './protocol';
import { ProcessView } from './view';

export * from './protocol';
export { ExecConnection } from './connection';
export { ProcessListModel, ProcessStream } from './model';

namespace CommandIDs {
  export const open = 'jupyter-exec:open';
  export const create = 'jupyter-exec:new-process';
  export const showPanel = 'jupyter-exec:show-panel';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-exec:plugin',
  description: 'A panel listing the server processes started through jupyter-exec, with live output views.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, IDefaultFileBrowser],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    browser: IDefaultFileBrowser | null
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

    const create = async () => {
      const here = browser ? app.serviceManager.contents.localPath(browser.model.path) : '';
      const request = await askNewProcess(here);
      if (!request) {
        return;
      }
      try {
        const processId = await list.start(request);
        open(processId);
      } catch (error) {
        await showErrorMessage('Could not start the process', error as Error);
      }
    };

    const panel = new ProcessesPanel({ model: list, open, create: () => void create() });
    app.shell.add(panel, 'left', { rank: 950 });

    app.commands.addCommand(CommandIDs.open, {
      label: args => `Open Output of ${args.processId}`,
      execute: args => open(String(args.processId))
    });
    app.commands.addCommand(CommandIDs.create, {
      label: 'New Process…',
      caption: 'Start a process on the Jupyter server and watch its output',
      execute: create
    });
    app.commands.addCommand(CommandIDs.showPanel, {
      label: 'Show Processes Panel',
      execute: () => app.shell.activateById(panel.id)
    });
    if (palette) {
      palette.addItem({ command: CommandIDs.create, category: 'Processes' });
      palette.addItem({ command: CommandIDs.showPanel, category: 'Processes' });
    }
    if (restorer) {
      restorer.add(panel, 'jupyter-exec-processes');
      void restorer.restore(tracker, {
        command: CommandIDs.open,
        args: view => ({ processId: view.processId }),
        name: view => view.processId
      });
    }
  }
};

export default plugin;
