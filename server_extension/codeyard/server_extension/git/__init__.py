"""Git from the panel: status, history, commit (with a proposed message), pull and push,
done by `git` itself. `handlers` is the HTTP side, `manager` the operations, `runner` how
git is started, `porcelain` the status parser, `message` the model's commit message."""
