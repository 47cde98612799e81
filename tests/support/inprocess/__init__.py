"""In-process helpers: the app under an ASGI client, a HealContext, payloads, the Noop
handler, config and data helpers."""
