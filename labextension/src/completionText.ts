/** Text windows sent for a completion: bounded so a huge file never becomes a huge prompt. */
export const MAX_PREFIX_CHARS = 6000;
export const MAX_SUFFIX_CHARS = 2000;

export function prefixSuffix(
  text: string,
  offset: number,
  maxPrefix = MAX_PREFIX_CHARS,
  maxSuffix = MAX_SUFFIX_CHARS
): { prefix: string; suffix: string } {
  const at = Math.max(0, Math.min(offset, text.length));
  let prefix = text.slice(Math.max(0, at - maxPrefix), at);
  let suffix = text.slice(at, at + maxSuffix);
  // Cut at line boundaries so the model never sees half a line at the edges.
  if (at - maxPrefix > 0) {
    const nl = prefix.indexOf('\n');
    prefix = nl === -1 ? prefix : prefix.slice(nl + 1);
  }
  if (at + maxSuffix < text.length) {
    const nl = suffix.lastIndexOf('\n');
    suffix = nl === -1 ? suffix : suffix.slice(0, nl + 1);
  }
  return { prefix, suffix };
}
