// Test-side names for the project's own helpers (also used by the demo and the bench).
export { freePort } from '../../services/free-port';
export { waitFor } from '../../services/poll';
