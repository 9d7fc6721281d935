# arqond build. Two commands matter to a newcomer: `make demo` and `make test`.
# Everything they need is installed here into .venv (nothing global but the
# Debian packages .ci/run adds for promtool/systemd-analyze when they are absent).

PY        ?= python3
VENV      := .venv
VPY       := $(VENV)/bin/python
B         := native/build
CC        ?= cc
CFLAGS    ?= -O3 -g
WARN      := -Wall -Wextra -Werror -Wno-unused-parameter -std=gnu11
INC       := -Inative/include -Inative/src
LIBSRC    := native/src/arqon.c
HDRS      := native/include/arqon.h native/include/arqon_layout.h native/src/shm_proto.h
CTESTS    := $(patsubst native/tests/%.c,%,$(wildcard native/tests/test_*.c))
CTOOLS    := $(patsubst native/tests/%.c,%,$(wildcard native/tests/tool_*.c))
APPS      := $(patsubst native/apps/%.c,%,$(wildcard native/apps/*.c))

.PHONY: all native venv ffi test test-c test-py sanitize demo bench header clean

all: native venv ffi

$(VENV)/.stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $@
venv: $(VENV)/.stamp

# --- data plane ------------------------------------------------------------
$(B):
	mkdir -p $(B) $(B)/asan $(B)/tsan
$(B)/arqon.o: $(LIBSRC) $(HDRS) | $(B)
	$(CC) $(CFLAGS) $(WARN) -fPIC -fvisibility=hidden $(INC) -c $< -o $@
$(B)/libarqon.so: $(B)/arqon.o
	$(CC) -shared -o $@ $< -lpthread
$(B)/libarqon.a: $(B)/arqon.o
	ar rcs $@ $<
$(B)/%: native/tests/%.c $(B)/libarqon.a $(HDRS)
	$(CC) $(CFLAGS) $(WARN) $(INC) $< $(B)/libarqon.a -o $@ -lpthread -lm
$(B)/%: native/apps/%.c $(B)/libarqon.a $(HDRS) $(wildcard native/apps/*.h)
	$(CC) -O3 -g $(WARN) -march=x86-64-v2 $(INC) $< $(B)/libarqon.a -o $@ -lpthread -lm

# test_admit compiles the daemon's C (Tier 1's admission fast path) in: rebuild when it changes
$(B)/test_admit $(B)/asan/test_admit $(B)/tsan/test_admit: native/src/arqd_admit.c native/src/arqd_helper.c native/src/arqd_helper.h

native: $(B)/libarqon.so $(B)/libarqon.a $(addprefix $(B)/,$(CTESTS) $(CTOOLS) $(APPS))

# Sanitizer builds compile the library source into each test binary.
$(B)/asan/%: native/tests/%.c $(LIBSRC) $(HDRS) | $(B)
	$(CC) -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all $(WARN) $(INC) $< $(LIBSRC) -o $@ -lpthread -lm
$(B)/tsan/%: native/tests/%.c $(LIBSRC) $(HDRS) | $(B)
	$(CC) -O1 -g -fsanitize=thread $(WARN) $(INC) $< $(LIBSRC) -o $@ -lpthread -lm

# cffi helper (daemon side of the shm protocol), compiled in place next to shm_layout.
ffi: $(VENV)/.stamp native/src/shm_proto.h native/src/arqd_helper.c native/src/arqd_helper.h native/src/arqd_admit.c native/include/arqon_layout.h shm_layout/_build_ffi.py
	$(VPY) shm_layout/_build_ffi.py

header: $(VENV)/.stamp
	$(VPY) -m shm_layout.gen_header > native/include/arqon_layout.h

# --- tests -------------------------------------------------------------------
test-c: native
	@for t in $(CTESTS); do echo "== $$t"; ./$(B)/$$t || exit 1; done
	@echo "== read path against its model"; ./$(B)/tool_read_changed rp-check-$$$$ --check

sanitize: $(addprefix $(B)/asan/,$(CTESTS)) $(addprefix $(B)/tsan/,$(CTESTS))
	@for t in $(CTESTS); do echo "== asan+ubsan $$t"; ASAN_OPTIONS=detect_leaks=1 ./$(B)/asan/$$t --quick || exit 1; done
	@for t in $(CTESTS); do echo "== tsan $$t"; TSAN_OPTIONS=halt_on_error=1 setarch -R ./$(B)/tsan/$$t --quick || exit 1; done

test-py: all
	$(VPY) -m pytest -q

test: all test-c sanitize test-py

demo: all
	$(VENV)/bin/arqond demo all

bench: all
	$(VPY) -m pip install -q -e '.[test,bench]'
	$(VENV)/bin/arqond bench dataplane --json
	$(VENV)/bin/arqond bench tier2 --json
	$(VENV)/bin/arqond bench judge --json
	$(VENV)/bin/arqond bench decision --json

clean:
	rm -rf $(B) shm_layout/_shm*.so
