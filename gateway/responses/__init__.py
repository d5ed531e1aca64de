"""OpenAI's Responses API (POST /v1/responses), served by translating to chat completions.

Routing, fallback, thinking, retrieval, pricing and metrics all come from the chat pipeline
(`Gateway.handle_chat`); this package only translates the request, the answer and the stream, and
keeps responses for `previous_response_id`.
"""
