"""``python -m lambda_streaming``: what the layer's ``bootstrap`` starts."""

from lambda_streaming.runtime import main

main()
