import { validateCoordinationName } from './lock-name';

/**
 * Where a queue's keys live (NAME used verbatim as a prefix): NAME/items/<id>
 * and NAME/claims/<id>. Its own file so the producer side (EtcdQueue), the
 * consumer and a delivery share the layout without importing one another.
 */
export interface QueueKeys {
  readonly name: string;
  readonly itemsPrefix: string;
  readonly claimsPrefix: string;
}

/** The layout of queue `name`; throws on a name that cannot be a key prefix. */
export function queueKeys(name: string): QueueKeys {
  const bad = validateCoordinationName(name);
  if (bad) throw new Error(`invalid queue name ${JSON.stringify(name)}: ${bad}`);
  return { name, itemsPrefix: `${name}/items/`, claimsPrefix: `${name}/claims/` };
}
