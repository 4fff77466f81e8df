/**
 * The two DOM helpers every part of the panel uses. The panel is plain DOM inside Lumino
 * widgets (a handful of forms), so these stand in for a UI framework.
 */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { className?: string; text?: string; title?: string; attrs?: Record<string, string> } = {},
  ...children: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) {
    node.className = props.className;
  }
  if (props.text !== undefined) {
    node.textContent = props.text;
  }
  if (props.title) {
    node.title = props.title;
  }
  for (const [k, v] of Object.entries(props.attrs ?? {})) {
    node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}

export function button(label: string, className: string, onClick: () => void): HTMLButtonElement {
  const b = el('button', {
    className: `jp-Button jp-mod-styled ${className}`,
    text: label,
    attrs: { type: 'button' }
  });
  b.addEventListener('click', onClick);
  return b;
}
