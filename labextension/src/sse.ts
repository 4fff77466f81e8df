/**
 * A minimal server-sent-events parser: enough for `data:` lines carrying JSON, split at
 * arbitrary chunk boundaries. Kept apart from fetch so it is testable without a network.
 */
export class SSEParser {
  private buffer = '';

  /** Feed a chunk of text; returns the JSON payloads of every event it completed. */
  push(chunk: string): unknown[] {
    this.buffer += chunk.replace(/\r\n?/g, '\n');
    const events: unknown[] = [];
    let end = this.buffer.indexOf('\n\n');
    while (end !== -1) {
      const block = this.buffer.slice(0, end);
      this.buffer = this.buffer.slice(end + 2);
      const data = block
        .split('\n')
        .filter(line => line.startsWith('data:'))
        .map(line => line.slice(5).replace(/^ /, ''))
        .join('\n');
      if (data) {
        try {
          events.push(JSON.parse(data));
        } catch {
          events.push({ error: 'bad_event', message: 'the server sent an unreadable event' });
        }
      }
      end = this.buffer.indexOf('\n\n');
    }
    return events;
  }
}
