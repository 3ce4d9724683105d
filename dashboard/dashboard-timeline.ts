/** One thing that happened in the mesh, as the page's timeline shows it. */
export interface TimelineEvent {
  /** Date.now() when the dashboard saw it. */
  at: number;
  kind: 'joined' | 'left' | 'lease-lost' | 're-registered' | 'leader-elected' | 'leader-changed' | 'election-ended' | 'lock-taken' | 'lock-released';
  /** What it is about: an endpoint key, an election or lock name. */
  subject: string;
  text: string;
}

/** The last `capacity` events, oldest first (a bounded ring: the page never grows without end). */
export class DashboardTimeline {
  private readonly events: TimelineEvent[] = [];

  constructor(private readonly capacity = 500) {}

  add(ev: TimelineEvent): void {
    this.events.push(ev);
    if (this.events.length > this.capacity) this.events.splice(0, this.events.length - this.capacity);
  }

  list(): TimelineEvent[] {
    return [...this.events];
  }
}
