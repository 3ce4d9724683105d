import * as path from 'node:path';

// Tests start mesh commands with the same helper as the bench and the demo.
export { MeshProcess, MESH_MAIN, runMesh, type LogLine, type MeshProcessOptions } from '../../demo/mesh-process';

/** The repository's root. */
export const REPO = path.resolve(__dirname, '..', '..');
