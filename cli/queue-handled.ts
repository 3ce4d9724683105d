/**
 * What `mesh queue pop` does with one delivered item, shared by its two
 * ways of handing items over: to a command (queue-cmd-handler.ts) or to
 * whoever reads stdout (queue-stdout-sink.ts).
 */
/** How one delivered item was handled: acknowledge it, or give it back and stop (with `code`, else as after a signal). */
export type Handled = { ack: true } | { ack: false; code?: number; why: string };

/** Exit code when the reader of stdout went away (EPIPE): 128 + SIGPIPE, as a shell reports `yes | head`. */
export const EXIT_READER_GONE = 141;
/** Exit code when stdout mode meets an item holding a line break (pushed by other means): EX_DATAERR. */
export const EXIT_MULTILINE_ITEM = 65;
