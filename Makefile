# The two commands of the README.  Both work from a fresh clone on a fresh Debian 12
# machine (as root): they install what they need (Debian packages, a pinned venv
# under /var/tmp/vmops), start the local OpenStack or reuse the one that runs.
.PHONY: demo test lint lint-fix cloud-up cloud-down constraints

demo:  ## boot a VM on the local cloud and watch its minion reach a real salt-master
	bash tests/harness/demo.sh

test:  ## the whole test suite: unit, functional (local cloud), integration (real daemons)
	bash tests/harness/test.sh $(ARGS)

lint:  ## ruff check and format check (make test runs it first)
	/var/tmp/vmops/venv/bin/ruff check _utils _modules _runners _states tests bench
	/var/tmp/vmops/venv/bin/ruff format --check _utils _modules _runners _states tests bench

lint-fix:
	/var/tmp/vmops/venv/bin/ruff check --fix _utils _modules _runners _states tests bench
	/var/tmp/vmops/venv/bin/ruff format _utils _modules _runners _states tests bench

cloud-up:
	bash tests/harness/cloud.sh up

cloud-down:
	bash tests/harness/cloud.sh down

constraints:  ## re-pin tests/constraints.txt from a fresh resolve
	python3 -m venv /tmp/vmops-pin && /tmp/vmops-pin/bin/pip install -q -r tests/requirements.txt \
	  && /tmp/vmops-pin/bin/pip freeze > tests/constraints.txt && rm -rf /tmp/vmops-pin
