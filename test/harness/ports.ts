// Test-side names for the project's own helpers (also used by the demo and the bench).
export { freePort } from '../../demo/free-port';
export { waitFor } from '../../demo/poll';
