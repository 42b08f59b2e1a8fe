// spool-bench: one binary, one subcommand per workload. Each prints its
// parameters, then its figures, then ratios against its baseline.
#pragma once

namespace spool::bench {

int RunChunks(int argc, char** argv);   // brick chunk store vs one file per message
int RunMeta(int argc, char** argv);     // metadata service mutations and readdir
int RunMaildir(int argc, char** argv);  // maildir workload on any directory

}  // namespace spool::bench
