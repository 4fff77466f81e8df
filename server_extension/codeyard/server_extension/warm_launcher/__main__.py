"""`python -m codeyard.server_extension.warm_launcher`: a pooled container's command."""

from codeyard.server_extension.warm_launcher import main

main()
