#include "fusemount/mount.h"

int main(int argc, char** argv) {
  spool::client::MountCommand command;
  if (!spool::client::ParseMountCommand(argc, argv, &command)) return 2;
  return spool::client::RunMount(command);
}
