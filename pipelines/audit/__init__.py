"""``cmtp audit``: threshold audits of scored pairs, streamed with bounded memory."""
