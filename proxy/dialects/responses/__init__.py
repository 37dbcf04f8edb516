"""The OpenAI Responses API (`POST /v1/responses`, what Codex speaks), mapped onto OpenAI chat completions, the
proxy's pivot: ``request`` turns a Responses request into a chat request, ``shapes`` builds the response
object, its output items and its stream events. Pure: dict in, dict out; ids and times come in as arguments."""
