/** Stylesheets imported for their side effect (xterm's CSS, loaded with the first view). */
declare module '*.css';
