// Transaction origins. Every edit this client makes to the shared document carries one of
// these, so the undo manager can tell one's own edits (undoable) from a collaborator's
// (applied by the provider, never undone here) and from transport moves (play, stop, seek:
// shared, but undoing them would be surprising).

/** One's own document edits: tracked by the undo manager. */
export const LOCAL_ORIGIN: { readonly name: string } = { name: 'local-edit' };

/** Transport moves (play, stop, seek): shared, not undoable. */
export const TRANSPORT_ORIGIN: { readonly name: string } = { name: 'transport' };
