"""schemathesis hooks for tests/e2e/test_openapi.py (loaded through SCHEMATHESIS_HOOKS): NDJSON
request bodies of POST /ingest/batch are sent as the generated text, byte for byte."""
import schemathesis


@schemathesis.serializer("application/x-ndjson", "application/ndjson")
def _ndjson(_ctx, value):
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if not isinstance(value, str):
        value = str(value)
    return value.encode("utf-8", "surrogatepass")
